"""What the use cases need from the outside world; the adapters provide it."""

from __future__ import annotations

from typing import Any, Protocol

from aqueduct_auth.domain.sign_in import DirectoryUser, SignInRequest
from aqueduct_libs.events import AuthEvent

__all__ = ["AttemptCounter", "Directory", "Events", "KeyPublisher", "RevokedSessions"]


class AttemptCounter(Protocol):
    async def check(self, key: str, now: float) -> int:
        """Record one sign-in attempt for ``key``; 0 when allowed, else seconds until the next is."""
        ...


class Directory(Protocol):
    async def sign_in(self, request: SignInRequest) -> DirectoryUser: ...


class Events(Protocol):
    async def publish(self, event: AuthEvent) -> None: ...


class KeyPublisher(Protocol):
    async def __call__(self, jwks: dict[str, Any]) -> None: ...


class RevokedSessions(Protocol):
    def session_ended(self, session_id: str, until: float) -> None:
        """Tell every verifying service to refuse the session's access tokens until ``until``.

        Must not block: the caller is answering a user."""
        ...
