"""The sign-in error page's texts. Only these reach the page: the address carries a reason code, so
nobody can make the product's own page show words of their choosing (a phishing aid)."""

from __future__ import annotations

__all__ = ["DEFAULT_MESSAGE", "sign_in_error_message"]

DEFAULT_MESSAGE = "Sign-in failed. Start again from the sign-in page."

_MESSAGES = {
    "incomplete_link": "The sign-in link is incomplete. Start again from the sign-in page.",
    "not_started_here": "This sign-in was not started in this browser. Sign in again from the sign-in page.",
    "invalid_code": "This sign-in link has expired or was already used. Sign in again.",
    "no_org": "No organisation is mapped from your groups. Ask an administrator.",
    "user_deactivated": "Your account has been deactivated. Ask an administrator.",
    "identity_conflict": "Your email address belongs to another account here. Ask an administrator.",
    "sign_in_refused": "Your account cannot sign in here. Ask an administrator.",
    "directory_unavailable": "The sign-in service is busy. Try again in a moment.",
    "rate_limited": "Too many sign-in attempts. Wait a minute and try again.",
    "idp_unreachable": "The identity provider cannot be reached. Try again later.",
    "sso_failed": "Single sign-on did not complete. Start again from the sign-in page.",
}


def sign_in_error_message(reason: str) -> str:
    """The text for a reason code; the general text for anything unknown."""
    return _MESSAGES.get(reason, DEFAULT_MESSAGE)
