"""Tampered, expired and wrongly-signed session tokens are refused by ``SessionVerifier``.

``SessionVerifier`` (aqueduct_libs.sessions) is what every other service uses; the keys come from the
auth service's own key ring, so these are the tokens a real attacker could get hold of or forge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aqueduct_auth.adapters.keys import KeyRing, SigningKey
from aqueduct_auth.domain.sign_in import DirectoryUser, session_claims
from aqueduct_libs.sessions import InvalidSessionError, SessionVerifier

USER = DirectoryUser(user_id="user-1", org_id="org-1", name="Alice", email="alice@example.org")


@pytest.fixture
def keys(tmp_path) -> KeyRing:
    return KeyRing.load(tmp_path / "auth")


@pytest.fixture
def verifier(keys: KeyRing) -> SessionVerifier:
    verifier = SessionVerifier()
    verifier.load_jwks(keys.jwks())
    return verifier


def issue(key: SigningKey, now: int | None = None, ttl: int = 900, **changes: object) -> str:
    payload = session_claims(USER, "session-1", int(time.time()) if now is None else now, ttl)
    return key.sign({**payload, **changes})


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(verifier: SessionVerifier, token: str) -> str:
    with pytest.raises(InvalidSessionError) as caught:
        verifier.verify(token)
    return str(caught.value)


def test_a_genuine_token_verifies(keys: KeyRing, verifier: SessionVerifier) -> None:
    claims = verifier.verify(issue(keys.current))
    assert (claims.sub, claims.org, claims.admin) == ("user-1", "org-1", False)


def test_a_tampered_payload_is_refused(keys: KeyRing, verifier: SessionVerifier) -> None:
    header, payload, signature = issue(keys.current).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = ".".join([header, b64({**claims, "admin": True}), signature])
    assert "signature" in refused(verifier, forged).lower()


def test_a_tampered_signature_is_refused(keys: KeyRing, verifier: SessionVerifier) -> None:
    header, payload, signature = issue(keys.current).split(".")
    flipped = ("A" if signature[5] != "A" else "B").join([signature[:5], signature[6:]])
    refused(verifier, ".".join([header, payload, flipped]))


def test_an_expired_token_is_refused(keys: KeyRing, verifier: SessionVerifier) -> None:
    token = issue(keys.current, now=int(time.time()) - 3600, ttl=900)
    assert "expired" in refused(verifier, token).lower()


def test_a_token_signed_by_another_key_is_refused(keys: KeyRing, verifier: SessionVerifier) -> None:
    other = SigningKey.generate()
    assert "unknown key" in refused(verifier, issue(other))
    # Another key that claims our kid: the signature does not match our public key.
    impostor = jwt.encode(
        session_claims(USER, "s", int(time.time()), 900),
        other.private_key,
        algorithm="ES256",
        headers={"kid": keys.current.kid},
    )
    assert "signature" in refused(verifier, impostor).lower()


def test_algorithm_confusion_is_refused(keys: KeyRing, verifier: SessionVerifier) -> None:
    payload = session_claims(USER, "s", int(time.time()), 900)
    unsigned = ".".join([b64({"alg": "none", "kid": keys.current.kid}), b64(payload), ""])
    refused(verifier, unsigned)
    # HS256 keyed with our public key (the classic confusion attack) must not pass as ES256.
    public_pem = keys.current.public_pem()
    header = b64({"alg": "HS256", "kid": keys.current.kid, "typ": "JWT"})
    signing_input = f"{header}.{b64(payload)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    refused(verifier, forged)


def test_wrong_issuer_or_audience_is_refused(keys: KeyRing, verifier: SessionVerifier) -> None:
    refused(verifier, issue(keys.current, iss="someone-else"))
    refused(verifier, issue(keys.current, aud="another-app"))


def test_after_rotation_the_old_key_verifies_and_a_second_rotation_retires_it(keys: KeyRing) -> None:
    old = issue(keys.current)
    keys.rotate()
    verifier = SessionVerifier()
    verifier.load_jwks(keys.jwks())
    verifier.verify(old)
    verifier.verify(issue(keys.current))
    keys.rotate()
    verifier.load_jwks(keys.jwks())
    assert "unknown key" in refused(verifier, old)


def test_a_configured_key_must_be_p256(tmp_path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="P-256"):
        KeyRing.load(tmp_path, p384.decode())
    configured = SigningKey.generate()
    ring = KeyRing.load(tmp_path / "unused", configured.private_pem().decode())
    assert ring.current.kid == configured.kid and not (tmp_path / "unused").exists()


@pytest.mark.parametrize("sent", ["garbage", "a.b", "not.a.jwt", "Basic dXNlcjpwYXNz"])
def test_something_that_is_no_token_at_all_is_called_malformed(verifier: SessionVerifier, sent: str) -> None:
    """What every service answers a pasted password or a truncated token: not PyJWT's "Not enough
    segments"."""
    said = refused(verifier, sent)
    assert said == "not a session token (malformed)"
