"""API tokens on the reports API: the directory says whom a token belongs to and which roles it acts
with (``GET /api/me`` with the token: a token without management access acts as a plain User, so it reads
its owner's own usage only). Answers are kept for ``ttl`` seconds, keyed by the token's SHA-256, so a
deleted token may read for at most that long; failures are never cached."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

import httpx

from aqueduct_accounting.domain.scope import Viewer

__all__ = ["ApiTokenRejectedError", "ApiTokenViewers", "DirectoryUnavailableError"]


class ApiTokenRejectedError(Exception):
    """The directory does not know the token (unknown, expired, deleted, or its user deactivated)."""


class DirectoryUnavailableError(Exception):
    """The directory could not be asked."""


class ApiTokenViewers:
    def __init__(self, directory_url: str, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self._url = directory_url.rstrip("/")
        self._ttl = ttl
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[float, Viewer]] = OrderedDict()
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self._url, timeout=5.0)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def viewer(self, token: str) -> Viewer:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self._client is None:
            await self.start()
        assert self._client is not None
        try:
            answer = await self._client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise DirectoryUnavailableError(
                f"the directory cannot be reached ({type(exc).__name__})"
            ) from exc
        if answer.status_code == 401:
            raise ApiTokenRejectedError("unknown, expired or deleted API token")
        if answer.status_code != 200:
            raise DirectoryUnavailableError(f"the directory answered {answer.status_code}")
        me = answer.json()
        acting = me["acting"]
        org_id = me.get("org_id")
        viewer = Viewer(
            user_id=me["id"],
            org_id=org_id,
            admin=bool(acting["admin"]),
            org_admin=bool(acting["org_admin"]) and bool(org_id),
            teams=tuple(acting["team_ids"]),
            team_admin=tuple(acting["team_admin_ids"]),
        )
        self._cache[key] = (now + self._ttl, viewer)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return viewer
