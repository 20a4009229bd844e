"""The ES256 signing keys: generated on first start, kept under ``<data_dir>/auth/``, rotated on demand.

The JWKS document lists the current public key and the previous one, so tokens signed just before a
rotation stay valid until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

__all__ = ["KeyRing", "SigningKey"]

CURRENT_FILE = "signing_key.pem"
PREVIOUS_FILE = "previous_signing_key.pub.pem"


class SigningKey:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.private_key = private_key
        self.public_jwk = public_jwk(private_key.public_key())
        self.kid = self.public_jwk["kid"]

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the signing key must be an EC P-256 private key (ES256)")
        return cls(key)

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, payload: dict[str, Any]) -> str:
        return jwt.encode(payload, self.private_key, algorithm="ES256", headers={"kid": self.kid})


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    # RFC 7638 thumbprint: a kid that is the same wherever the same key is loaded.
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}


class KeyRing:
    """The current signing key and the previous public key, persisted in ``folder`` (or given)."""

    def __init__(self, current: SigningKey, previous: dict[str, Any] | None, folder: Path | None) -> None:
        self.current = current
        self.previous = previous
        self._folder = folder

    @classmethod
    def load(cls, folder: Path, configured_pem: str = "") -> KeyRing:
        """The configured key, else the one on disk, else a new one written to disk (mode 0600)."""
        if configured_pem:
            return cls(SigningKey.from_pem(configured_pem.encode()), None, None)
        folder.mkdir(parents=True, exist_ok=True)
        current_path = folder / CURRENT_FILE
        if current_path.exists():
            current = SigningKey.from_pem(current_path.read_bytes())
        else:
            current = SigningKey.generate()
            _write_private(current_path, current.private_pem())
        previous = None
        previous_path = folder / PREVIOUS_FILE
        if previous_path.exists():
            loaded = serialization.load_pem_public_key(previous_path.read_bytes())
            if isinstance(loaded, ec.EllipticCurvePublicKey):
                previous = public_jwk(loaded)
        return cls(current, previous, folder)

    def rotate(self) -> None:
        """New current key; the old one stays in the JWKS (public part only) until the next rotation."""
        if self._folder is None:
            raise RuntimeError("the signing key is configured (AQUEDUCT_AUTH_SIGNING_KEY); rotate it there")
        new = SigningKey.generate()
        (self._folder / PREVIOUS_FILE).write_bytes(self.current.public_pem())
        _write_private(self._folder / CURRENT_FILE, new.private_pem())
        self.previous = self.current.public_jwk
        self.current = new

    def jwks(self) -> dict[str, Any]:
        keys = [self.current.public_jwk]
        if self.previous and self.previous["kid"] != self.current.kid:
            keys.append(self.previous)
        return {"keys": keys}


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
