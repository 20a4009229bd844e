"""Who a session token's holder is now: their current roles and whether they are still active.

A session token carries the roles its holder had at sign-in, and stays valid for minutes. Services that
act on a role (the auth service's local accounts, accounting's SQL, reports and dead letters) must not
believe it: an Admin demoted, or a user deactivated, a moment ago would keep their powers until the token
expires. ``CurrentRoles`` follows the ``user.*`` entries of the auth snapshot the directory publishes
(``TokenGrant`` with its ``roles``; the key is deleted when the user is deactivated) and ``current``
replaces a token's roles with those, or refuses the token of a user the directory no longer has.

A user seen by nobody yet (registered at this very sign-in, its entry a few milliseconds behind) is waited
for, up to ``wait`` seconds; a user whose entry was deleted is refused at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext
from pydantic import BaseModel, ConfigDict, ValidationError

from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher
from aqueduct_libs.sessions import InvalidSessionError, SessionClaims
from aqueduct_libs.snapshot import UserRoles

__all__ = ["CurrentRoles", "InactiveUserError", "RolesNotLoadedError"]

log = logging.getLogger(__name__)

WAIT_FOR_NEW_USER = 2.0  # seconds


class InactiveUserError(InvalidSessionError):
    """The directory has deactivated the token's user, or does not know them."""


class RolesNotLoadedError(Exception):
    """The users of the auth snapshot are not loaded yet: try again shortly."""


class _UserEntry(BaseModel):
    """The part of a ``user.<id>`` entry this reads (the rest is the proxy's)."""

    model_config = ConfigDict(extra="ignore")

    user_id: str
    org_id: str
    roles: UserRoles | None = None


class CurrentRoles:
    """The current roles of every active user, from the auth snapshot's ``user.*`` entries."""

    def __init__(self, wait: float = WAIT_FOR_NEW_USER) -> None:
        self._users: dict[str, _UserEntry] = {}  # by key
        self._gone: set[str] = set()  # keys deleted since this started (deactivated users)
        self._changed = asyncio.Event()
        self._wait = wait
        self.watcher: KVWatcher | None = None

    @property
    def loaded(self) -> bool:
        return self.watcher is not None and self.watcher.ready.is_set()

    def follow(self, js: JetStreamContext) -> KVWatcher:
        """The watcher to start (and wait for) with the service's others."""
        self.watcher = KVWatcher(
            js, names.AUTH_SNAPSHOT_BUCKET, self.put, self.delete, keys=f"{names.SNAPSHOT_USER_PREFIX}>"
        )
        return self.watcher

    def put(self, key: str, value: bytes) -> None:
        try:
            entry = _UserEntry.model_validate_json(value)
        except ValidationError as exc:
            log.warning("ignoring an unreadable user entry %s: %s", key, exc)
            return
        self._users[key] = entry
        self._gone.discard(key)
        self._wake()

    def delete(self, key: str) -> None:
        self._users.pop(key, None)
        self._gone.add(key)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def current(self, claims: SessionClaims) -> SessionClaims:
        """``claims`` with the roles and org the directory gives its user now; ``InactiveUserError`` for
        a deactivated or unknown user, ``RolesNotLoadedError`` before the users are loaded."""
        if self.watcher is not None and not self.loaded:
            raise RolesNotLoadedError("the directory's users are not loaded yet; try again shortly")
        key = names.snapshot_user_key(claims.sub)
        deadline = time.monotonic() + self._wait
        while (entry := self._users.get(key)) is None:
            left = deadline - time.monotonic()
            if key in self._gone or left <= 0:
                raise InactiveUserError("the user is deactivated or unknown to the directory")
            changed = self._changed
            try:
                async with asyncio.timeout(left):
                    await changed.wait()
            except TimeoutError:
                pass
        roles = entry.roles or UserRoles()  # a directory that publishes no roles grants none
        return claims.model_copy(
            update={
                "org": entry.org_id or None,
                "admin": roles.admin,
                "org_admin": roles.org_admin,
                "teams": list(roles.team_ids),
                "team_admin": list(roles.team_admin_ids),
            }
        )
