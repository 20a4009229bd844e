"""The directory's own errors, mapped once at the HTTP edge into problem documents."""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "DirectoryError",
    "InvalidFieldError",
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
    """The request is well-formed but a value breaks a rule: 422, as FastAPI answers for a wrong type."""

    status = 422
    code = "invalid_input"


class InvalidFieldError(InvalidInputError):
    """One named field (``slug``, ``limits.requests_per_minute``) holds a value its rule refuses."""

    code = "invalid_field"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.message = detail


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
