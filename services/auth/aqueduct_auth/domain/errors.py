"""Errors of the auth service's use cases. Mapped once, at the HTTP edge, into problem documents."""

from __future__ import annotations

__all__ = [
    "AccountExistsError",
    "AuthError",
    "DirectoryUnavailableError",
    "ExchangeCodeInvalidError",
    "InvalidCredentialsError",
    "InvalidFieldError",
    "NoSuchAccountError",
    "NotAllowedError",
    "PasswordChangeRequiredError",
    "RefreshTokenInvalidError",
    "SignInRateLimitedError",
    "SignInRefusedError",
    "SingleSignOnError",
]


class AuthError(Exception):
    """Base of the auth service's errors; ``message`` is safe to show to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCredentialsError(AuthError):
    def __init__(self) -> None:
        # One message for unknown user and wrong password: never tell which usernames exist.
        super().__init__("invalid username or password")


class SignInRateLimitedError(AuthError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many sign-in attempts; try again in {retry_after} s")
        self.retry_after = retry_after


class SignInRefusedError(AuthError):
    """The directory refused the user (e.g. no org is mapped from their groups).

    ``reason``: the directory's code (``no_org``, ``user_deactivated``, ...), which the UI turns into its
    own text; no text from here reaches the browser's address bar."""

    def __init__(self, message: str, reason: str = "sign_in_refused") -> None:
        super().__init__(message)
        self.reason = reason


class DirectoryUnavailableError(AuthError):
    def __init__(self) -> None:
        super().__init__("the directory did not answer; try again in a moment")


class RefreshTokenInvalidError(AuthError):
    def __init__(self) -> None:
        super().__init__("refresh token is invalid, expired or revoked; sign in again")


class ExchangeCodeInvalidError(AuthError):
    def __init__(self) -> None:
        super().__init__("sign-in code is invalid, expired or already used; sign in again")


class AccountExistsError(AuthError):
    pass


class InvalidFieldError(AuthError):
    """One named field of a request (``email``, ``password``) holds a value its rule refuses."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotAllowedError(AuthError):
    pass


class SingleSignOnError(AuthError):
    """The identity provider's answer could not be used (state mismatch, bad ID token, ...).

    ``reason``: ``sso_failed``, ``idp_unreachable`` or ``not_started_here``, for the UI's error page."""

    def __init__(self, message: str, reason: str = "sso_failed") -> None:
        super().__init__(message)
        self.reason = reason


class PasswordChangeRequiredError(AuthError):
    """The password was set by an Admin (or reset): the user chooses their own before signing in."""

    def __init__(self) -> None:
        super().__init__(
            "this password was set by an administrator and works once: choose your own password "
            "(POST /auth/password, `aqueduct login`, or the sign-in page)"
        )


class NoSuchAccountError(AuthError):
    pass
