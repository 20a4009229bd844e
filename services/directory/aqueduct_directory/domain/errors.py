"""The directory's own errors, mapped once at the HTTP edge into problem documents."""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "DirectoryError",
    "InvalidInputError",
    "NotFoundError",
    "PermissionDeniedError",
]


class DirectoryError(Exception):
    """Base of every rule the directory enforces. ``code`` is stable for clients to branch on."""

    status = 400
    code = "directory_error"

    def __init__(self, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code


class InvalidInputError(DirectoryError):
    status = 400
    code = "invalid_input"


class PermissionDeniedError(DirectoryError):
    status = 403
    code = "permission_denied"


class NotFoundError(DirectoryError):
    status = 404
    code = "not_found"


class ConflictError(DirectoryError):
    """A rule says no: a cap is reached, a name is taken, a member still owns a service account."""

    status = 409
    code = "conflict"
