"""What the auth service asks the directory at sign-in, what it answers, and what a session token says."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aqueduct_libs.sessions import SESSION_AUDIENCE, SESSION_ISSUER, SessionClaims

__all__ = ["DirectoryUser", "SignInRequest", "session_claims"]


class SignInRequest(BaseModel):
    """Body of ``directory.rpc.v1.sign_in``: who signed in and what the identity provider says."""

    subject: str  # "local:<username>", "oidc:<issuer>:<sub>", "jupyterhub:<name>"
    email: str = ""
    name: str = ""
    groups: list[str] = Field(default_factory=list)
    admin: bool = False
    # Only a verified email may link this identity to a user invited by that email (else anyone who
    # can make an account with that address at the provider would take the invited user over).
    email_verified: bool = False
    # A session renewing (refresh, code exchange) with the claims of its sign-in: the directory answers
    # with the user's current roles but changes none (the claims may be days old; a role an Admin took
    # away in the product must not come back from them). Only a real sign-in re-evaluates the groups.
    renewal: bool = False


class DirectoryUser(BaseModel):
    """The directory's answer: the user it resolved or provisioned, with their roles."""

    model_config = ConfigDict(extra="ignore")

    user_id: str
    org_id: str | None = None
    name: str = ""
    email: str = ""
    admin: bool = False
    org_admin: bool = False
    teams: list[str] = Field(default_factory=list)
    team_admin: list[str] = Field(default_factory=list)


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
