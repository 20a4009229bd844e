"""Helpers of the auth service's tests (a uniquely named module: test folders are not packages)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
from nats.aio.client import Client as NATS

from aqueduct_libs import names

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USERNAME",
    "ORG_OF_GROUP",
    "SECRET_KEY",
    "DirectoryTestResponder",
    "sign_in",
]

SECRET_KEY = "auth-tests-secret-key-0123456789abcdef"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "correct horse battery staple"

# Groups the directory test responder maps to orgs, as an admin would configure ``sso_group``.
ORG_OF_GROUP = {"staff": "org-staff"}


class DirectoryTestResponder:
    """Answers the directory's sign-in RPC like the directory would, and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.org_admins: set[str] = set()  # subjects the "directory" has made Org-Admin
        self.removed: set[str] = set()  # subjects the "directory" no longer accepts
        self._sub: Any = None

    @staticmethod
    def user_id(subject: str) -> str:
        return "user-" + hashlib.sha256(subject.encode()).hexdigest()[:12]

    async def start(self, nc: NATS) -> None:
        self._sub = await nc.subscribe(names.DIRECTORY_RPC_SIGN_IN, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_request(self, msg: Any) -> None:
        request = json.loads(msg.data)
        self.requests.append(request)
        await msg.respond(json.dumps(self.answer(request)).encode())

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        subject = request["subject"]
        if subject in self.removed:
            return {"error": "this account has been removed from the directory"}
        orgs = [ORG_OF_GROUP[g] for g in request.get("groups", []) if g in ORG_OF_GROUP]
        if not orgs and not request.get("admin"):
            groups = ", ".join(request.get("groups", [])) or "none"
            return {
                "error": f"No organisation is mapped from your groups ({groups}). Ask an administrator.",
                "code": "no_org",
            }
        return {
            "user_id": self.user_id(subject),
            "org_id": orgs[0] if orgs else None,
            "name": request.get("name", ""),
            "email": request.get("email", ""),
            "admin": bool(request.get("admin")),
            "org_admin": subject in self.org_admins,
            "teams": [],
            "team_admin": [],
        }

    def last(self, subject: str) -> dict[str, Any]:
        return next(r for r in reversed(self.requests) if r["subject"] == subject)


async def sign_in(client: httpx.AsyncClient, username: str, password: str, **kwargs: Any) -> httpx.Response:
    return await client.post("/auth/token", json={"username": username, "password": password}, **kwargs)
