"""The session verifier refuses the tokens of ended sessions, and forgets them once they have expired."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.sessions import (
    SESSION_AUDIENCE,
    SESSION_ISSUER,
    InvalidSessionError,
    SessionVerifier,
    watch_revoked_sessions,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Signer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwks: dict[str, Any] = {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}

    def token(self, sid: str, lifetime: int = 900) -> str:
        now = int(time.time())
        claims = {"sub": "u1", "sid": sid, "iss": SESSION_ISSUER, "aud": SESSION_AUDIENCE}
        return jwt.encode(
            claims | {"iat": now, "exp": now + lifetime}, self.key, algorithm="ES256", headers={"kid": "k1"}
        )


def test_an_ended_session_is_refused_and_other_sessions_are_not() -> None:
    signer = Signer()
    verifier = SessionVerifier()
    verifier.load_jwks(signer.jwks)
    verifier.revoke("s-ended", time.time() + 900)
    with pytest.raises(InvalidSessionError, match="session has ended"):
        verifier.verify(signer.token("s-ended"))
    assert verifier.verify(signer.token("s-other")).sid == "s-other"


def test_ended_sessions_are_pruned_once_their_tokens_have_expired() -> None:
    clock = Clock(1_000_000.0)
    verifier = SessionVerifier(clock=clock)
    verifier.revoke("old", clock.now + 900)
    verifier.revoke("already-expired", clock.now - 1)  # arrives late (a replay): not kept at all
    assert verifier.revoked_sessions == 1
    clock.now += 901
    verifier.revoke("new", clock.now + 900)  # the next revocation prunes what expired
    assert verifier.revoked_sessions == 1
    clock.now += 30  # within the prune interval: nothing to prune yet
    verifier.revoke("newer", clock.now + 900)
    assert verifier.revoked_sessions == 2
    verifier.forget("new")
    assert verifier.revoked_sessions == 1


def test_a_revoked_session_stays_refused_until_its_latest_expiry() -> None:
    clock = Clock(1_000_000.0)
    verifier = SessionVerifier(clock=clock)
    verifier.revoke("s", clock.now + 900)
    verifier.revoke("s", clock.now + 10)  # an older entry replayed after a newer one: keep the later end
    clock.now += 600
    signer = Signer()
    verifier.load_jwks(signer.jwks)
    with pytest.raises(InvalidSessionError):
        verifier.verify(signer.token("s"))


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.mark.nats
async def test_the_watcher_loads_existing_entries_before_ready_and_follows_new_ones(
    bus: EmbeddedNats,
) -> None:
    nc = await nats.connect(bus.url)
    js = nc.jetstream()
    await ensure_topology(js)
    kv = await js.key_value(names.AUTH_REVOKED_BUCKET)
    assert (await kv.status()).ttl == names.AUTH_REVOKED_MAX_AGE_SECONDS  # entries age out on their own
    await kv.put("s-before", str(int(time.time()) + 900).encode())
    await kv.put("s-garbled", b"not a time")
    signer = Signer()
    verifier = SessionVerifier()
    verifier.load_jwks(signer.jwks)
    watcher = watch_revoked_sessions(js, verifier)
    watcher.start()
    try:
        await asyncio.wait_for(watcher.ready.wait(), 10)
        with pytest.raises(InvalidSessionError):
            verifier.verify(signer.token("s-before"))
        assert verifier.verify(signer.token("s-garbled")).sid == "s-garbled"  # unreadable entry ignored
        await kv.put("s-after", str(int(time.time()) + 900).encode())
        for _ in range(100):
            if verifier.revoked_sessions == 2:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(InvalidSessionError):
            verifier.verify(signer.token("s-after"))
    finally:
        await watcher.stop()
        await nc.drain()
