"""What an Admin may type for a new local account: checked here, so the API answers 422 naming the field."""

from __future__ import annotations

import re
import unicodedata

from aqueduct_auth.domain.errors import InvalidFieldError

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "check_new_account"]

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
# The same rule as the directory's: the sign-in hands this email to it.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.][^@\s]{0,252}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1000
_MAX_GROUPS = 100


def _text(value: str, field: str, label: str, max_length: int) -> str:
    text = value.strip()
    if len(text) > max_length:
        raise InvalidFieldError(field, f"{label} must be at most {max_length} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise InvalidFieldError(field, f"{label} must not contain control characters")
    return text


def check_password(password: str, field: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidFieldError(field, f"at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidFieldError(field, f"at most {MAX_PASSWORD_LENGTH} characters")


def check_new_account(
    username: str, email: str, name: str, groups: list[str]
) -> tuple[str, str, str, list[str]]:
    """The cleaned username, email, name and groups; raises ``InvalidFieldError`` on the first bad one."""
    username = username.strip().lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidFieldError(
            "username", "lower-case letters, digits and . _ @ - only, at most 64 characters"
        )
    email = _text(email, "email", "the email", 254)
    if email and not _EMAIL.fullmatch(email):
        raise InvalidFieldError("email", f"{email!r} is not an email address (name@example.org)")
    name = _text(name, "name", "the name", 200)
    if len(groups) > _MAX_GROUPS:
        raise InvalidFieldError("groups", f"at most {_MAX_GROUPS} groups")
    cleaned = [_text(group, "groups", "a group", 200) for group in groups]
    if any(not group for group in cleaned):
        raise InvalidFieldError("groups", "a group must not be empty")
    return username, email, name, cleaned
