"""Helpers of the auth service's tests (a uniquely named module: test folders are not packages)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
from nats.aio.client import Client as NATS

from aqueduct_libs import names
from aqueduct_libs.bus import ensure_kv
from aqueduct_libs.snapshot import TokenGrant, UserRoles

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
    """Answers the directory's sign-in RPC like the directory would, and records what it was asked; and
    like the directory's projection, publishes each user it answers for (with their roles) as the auth
    snapshot's ``user.<id>`` entry, which the auth service checks session tokens against."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.org_admins: set[str] = set()  # subjects the "directory" has made Org-Admin
        self.removed: set[str] = set()  # subjects the "directory" no longer accepts
        self._sub: Any = None
        self._kv: Any = None

    @staticmethod
    def user_id(subject: str) -> str:
        return "user-" + hashlib.sha256(subject.encode()).hexdigest()[:12]

    async def start(self, nc: NATS) -> None:
        js = nc.jetstream()
        await ensure_kv(js, names.AUTH_SNAPSHOT_BUCKET, direct=True)
        self._kv = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        self._sub = await nc.subscribe(names.DIRECTORY_RPC_SIGN_IN, cb=self._on_request)

    async def publish_user(self, answer: dict[str, Any]) -> None:
        """The user's ``user.<id>`` entry as the directory projects it (roles from ``answer``)."""
        grant = TokenGrant(
            token_id=f"user:{answer['user_id']}",
            token_hash="",
            name=answer.get("name", ""),
            user_id=answer["user_id"],
            org_id=answer.get("org_id") or "org-default",
            roles=UserRoles(
                admin=answer["admin"],
                org_admin=answer["org_admin"],
                team_ids=answer["teams"],
                team_admin_ids=answer["team_admin"],
            ),
        )
        await self._kv.put(names.snapshot_user_key(answer["user_id"]), grant.model_dump_json().encode())

    async def deactivate(self, subject: str) -> None:
        """The directory deactivated the user: their entry is deleted."""
        await self._kv.delete(names.snapshot_user_key(self.user_id(subject)))

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_request(self, msg: Any) -> None:
        request = json.loads(msg.data)
        self.requests.append(request)
        answer = self.answer(request)
        if "user_id" in answer:
            await self.publish_user(answer)
        await msg.respond(json.dumps(answer).encode())

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
