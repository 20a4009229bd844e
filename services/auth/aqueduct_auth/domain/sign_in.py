"""What the auth service asks the directory at sign-in, what it answers, and what a session token says."""

from __future__ import annotations

from aqueduct_libs.rpc import DirectoryUser, SignInRequest
from aqueduct_libs.sessions import SESSION_AUDIENCE, SESSION_ISSUER, SessionClaims

__all__ = ["DirectoryUser", "SignInRequest", "session_claims"]


def session_claims(user: DirectoryUser, session_id: str, now: int, ttl: int) -> dict[str, object]:
    """The JWT payload of an access token; roles are a snapshot, refreshed on every refresh."""
    claims = SessionClaims(
        sub=user.user_id,
        sid=session_id,
        name=user.name,
        email=user.email,
        org=user.org_id,
        admin=user.admin,
        org_admin=user.org_admin,
        teams=user.teams,
        team_admin=user.team_admin,
        iat=now,
        exp=now + ttl,
    ).model_dump()
    return {**claims, "iss": SESSION_ISSUER, "aud": SESSION_AUDIENCE}
