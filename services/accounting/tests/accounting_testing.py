"""Helpers for the accounting tests: session keys and tokens, the service as a child process, publishing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from aqueduct_cli.embedded import free_port
from aqueduct_libs import names
from aqueduct_libs.events import UsageRecorded
from aqueduct_libs.snapshot import TokenGrant, UserRoles

__all__ = ["AccountingProcess", "SessionKeys", "publish_usage", "usage_event", "wait_until"]


class SessionKeys:
    """An ES256 key pair standing in for the auth service's: JWKS for the KV bucket, and signed tokens.

    Like the directory's projection, it also publishes each token's user, with the roles the token
    claims, as the auth snapshot's ``user.<id>`` entry: accounting acts on those, not on the token's."""

    def __init__(self, kid: str = "test-key-1") -> None:
        self.kid = kid
        self._private = ec.generate_private_key(ec.SECP256R1())
        self._js: Any = None
        self._users: dict[str, bytes] = {}  # key -> entry, written by ``publish`` and ``signed_in``

    @property
    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._private.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def token(self, sub: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "sub": sub,
            "sid": f"s-{sub}",
            "iss": "aqueduct-auth",
            "aud": "aqueduct",
            "iat": now,
            "exp": now + 3600,
            **claims,
        }
        self._users[names.snapshot_user_key(sub)] = self.user_entry(sub, **claims)  # for ``publish``
        return jwt.encode(payload, self._private, algorithm="ES256", headers={"kid": self.kid})

    async def signed_in(self, sub: str, **claims: Any) -> str:
        """A token, its user published (once the keys are): what signing in gives."""
        token = self.token(sub, **claims)
        if self._js is not None:
            key = names.snapshot_user_key(sub)
            await self._put(key, self._users[key])
        return token

    @staticmethod
    def user_entry(sub: str, **claims: Any) -> bytes:
        """The ``user.<id>`` entry of an active user with these roles."""
        grant = TokenGrant(
            token_id=f"user:{sub}",
            token_hash="",
            name=claims.get("name", ""),
            user_id=sub,
            org_id=claims.get("org") or "",
            roles=UserRoles(
                admin=claims.get("admin", False),
                org_admin=claims.get("org_admin", False),
                team_ids=claims.get("teams", []),
                team_admin_ids=claims.get("team_admin", []),
            ),
        )
        return grant.model_dump_json(exclude_defaults=True).encode()

    async def _put(self, key: str, entry: bytes) -> None:
        kv = await self._js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        await kv.put(key, entry)

    async def set_user(self, js: Any, sub: str, **claims: Any) -> None:
        """The directory changed the user's roles (or, with ``active=False``, deactivated them)."""
        kv = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        key = names.snapshot_user_key(sub)
        if claims.pop("active", True):
            await kv.put(key, self.user_entry(sub, **claims))
        else:
            await kv.delete(key)

    async def publish(self, js: Any) -> None:
        kv = await js.key_value(names.AUTH_KEYS_BUCKET)
        await kv.put("jwks", json.dumps(self.jwks).encode())
        self._js = js
        for key, entry in self._users.items():
            await self._put(key, entry)


def usage_event(i: int, **overrides: Any) -> UsageRecorded:
    fields: dict[str, Any] = {
        "event_id": f"ev-{i:08d}",
        "token_id": f"tok-{i % 7}",
        "user_id": f"user-{i % 5}",
        "team_id": f"team-{i % 3}",
        "org_id": f"org-{i % 2}",
        "endpoint": "local",
        "model": ("gpt-4o-mini", "local-llama")[i % 2],
        "route": "/v1/chat/completions",
        "status_code": 200,
        "input_tokens": 10 + i % 13,
        "output_tokens": 3 + i % 17,
    }
    fields |= overrides
    return UsageRecorded(**fields)


async def publish_usage(js: Any, events: list[UsageRecorded]) -> None:
    for event in events:
        await js.publish(
            names.USAGE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.event_id}
        )


@dataclass
class AccountingProcess:
    """``python -m aqueduct_accounting`` as its own process, the way the launcher starts it."""

    data_dir: Path
    nats_url: str
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> AccountingProcess:
        env = {
            **os.environ,
            "AQUEDUCT_DEV_MODE": "true",
            "AQUEDUCT_NATS_URL": self.nats_url,
            "AQUEDUCT_DATA_DIR": str(self.data_dir),
            "AQUEDUCT_ACCOUNTING_PORT": str(self.port),
            "AQUEDUCT_ACCOUNTING_HOST": "127.0.0.1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **self.env_extra,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "accounting.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aqueduct_accounting"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"accounting exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"accounting not ready:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir / "accounting.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process else None

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus samples without labels, by name."""
        samples: dict[str, float] = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=10.0).text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.partition(" ")
                samples[name] = float(value)
        return samples

    def sql(self, token: str, query: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/api/sql",
            json={"query": query},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )


async def wait_until(check: Callable[[], bool], within: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass; returns its last answer."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def now_utc() -> datetime:
    return datetime.now(UTC)
