"""Password hashing with argon2id (argon2-cffi's recommended parameters), off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["Passwords"]


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Verified when the username is unknown, so a miss costs as long as a wrong password.
        self._dummy_hash = self._hasher.hash("aqueduct-no-such-account")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return await asyncio.to_thread(
                self._hasher.verify, password_hash or self._dummy_hash, password
            ) and (password_hash is not None)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
