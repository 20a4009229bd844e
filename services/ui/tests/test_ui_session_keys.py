"""The UI verifies session tokens with the keys the auth service puts in the ``auth_keys`` KV bucket,
and follows a key rotation without a restart. Real NATS server; no auth service needed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jwt
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.sessions import SESSION_AUDIENCE, SESSION_ISSUER, InvalidSessionError, SessionVerifier
from aqueduct_ui.adapters.jwks import KeyRing

pytestmark = pytest.mark.nats


def jwks(*keys: tuple[str, ec.EllipticCurvePrivateKey]) -> bytes:
    return json.dumps(
        {
            "keys": [
                {**json.loads(ECAlgorithm.to_jwk(k.public_key())), "kid": kid, "alg": "ES256"}
                for kid, k in keys
            ]
        }
    ).encode()


def token(kid: str, key: ec.EllipticCurvePrivateKey) -> str:
    now = int(time.time())
    claims = {
        "sub": "u1",
        "sid": "s",
        "iss": SESSION_ISSUER,
        "aud": SESSION_AUDIENCE,
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


async def test_keys_come_from_the_bucket_and_rotate_live(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_topology(js)
        kv = await js.key_value(names.AUTH_KEYS_BUCKET)
        first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        await kv.put("jwks", jwks(("k1", first)))

        async def no_http() -> dict:
            raise AssertionError("the keys must come from the bus here")

        ring = KeyRing(SessionVerifier(), no_http)
        await ring.start(server.url)
        try:
            for _ in range(100):
                if ring.ready:
                    break
                await asyncio.sleep(0.05)
            assert ring.verifier.verify(token("k1", first)).sub == "u1"

            # Rotation: the auth service publishes the new key next to the old one.
            await kv.put("jwks", jwks(("k2", second), ("k1", first)))
            for _ in range(100):
                try:
                    ring.verifier.verify(token("k2", second))
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            assert ring.verifier.verify(token("k2", second)).sub == "u1"
            assert ring.verifier.verify(token("k1", first)).sub == "u1"

            # A broken document never replaces good keys.
            await kv.put("jwks", b"not json")
            await asyncio.sleep(0.3)
            assert ring.verifier.verify(token("k2", second)).sub == "u1"
        finally:
            await ring.stop()
            await nc.close()
    finally:
        server.stop()


async def test_a_signed_out_session_is_refused_from_the_revoked_bucket(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_topology(js)
        key = ec.generate_private_key(ec.SECP256R1())
        await (await js.key_value(names.AUTH_KEYS_BUCKET)).put("jwks", jwks(("k1", key)))

        async def no_http() -> dict:
            raise AssertionError("the keys must come from the bus here")

        ring = KeyRing(SessionVerifier(), no_http)
        await ring.start(server.url)
        try:
            for _ in range(100):
                if ring.ready:
                    break
                await asyncio.sleep(0.05)
            assert ring.verifier.verify(token("k1", key)).sid == "s"
            # The auth service ends session "s" (the sid of ``token``): the UI refuses it at once.
            revoked = await js.key_value(names.AUTH_REVOKED_BUCKET)
            await revoked.put("s", str(int(time.time()) + 900).encode())
            for _ in range(100):
                if ring.verifier.revoked_sessions:
                    break
                await asyncio.sleep(0.02)
            with pytest.raises(InvalidSessionError, match="session has ended"):
                ring.verifier.verify(token("k1", key))
        finally:
            await ring.stop()
            await nc.drain()
    finally:
        server.stop()
