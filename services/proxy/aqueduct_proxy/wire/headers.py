"""Which of a client's headers pass to a model server: the SDKs' hints (``x-stainless-*``), provider
options (``OpenAI-*``, ``anthropic-*``) and test hints, never a credential.

The client's gateway token is Aqueduct's secret: a model server (a third party's, often) must not see it.
Clients send it as ``Authorization`` (never forwarded: not an ``x-`` header) or ``x-api-key``, and some
generic clients send it in both or in another key header; so the usual key headers are never forwarded,
and neither is any other header that carries the token the client presented.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["NOT_FORWARDED", "forwarded_headers"]

NOT_FORWARDED = frozenset(
    {
        "x-api-key",
        "x-goog-api-key",
        "x-auth-token",
        "x-access-token",
        "x-amz-security-token",
        "x-forwarded-for",
        "x-real-ip",
    }
)


def _presented(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials the client presented: the bearer token and ``x-api-key`` (either may be the one
    a route reads)."""
    found = []
    scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found.append(token.strip())
    if key := headers.get("x-api-key", "").strip():
        found.append(key)
    return tuple(found)


def forwarded_headers(headers: Mapping[str, str], other_prefix: str) -> dict[str, str]:
    """The ``x-*`` headers and those starting with ``other_prefix`` (lower case, e.g. ``"openai-"``), but
    for credentials: the key headers above and any header holding the presented token."""
    secrets = _presented(headers)
    size = len(other_prefix)
    forwarded = {}
    for k, v in headers.items():
        # (the name lowered once: ``k.lower()[:2]`` is ``k[:2].lower()`` for "x-" and the prefix)
        lower = k.lower()
        if (lower[:2] == "x-" or lower[:size] == other_prefix) and lower not in NOT_FORWARDED:
            for secret in secrets:
                if secret in v:
                    break
            else:
                forwarded[k] = v
    return forwarded
