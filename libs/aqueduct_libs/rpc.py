"""The sign-in RPC's contract (``directory.rpc.v1.sign_in``): auth asks, the directory answers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DirectoryUser", "SignInRefusal", "SignInRequest"]


class SignInRequest(BaseModel):
    """Who signed in and what the identity provider says."""

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


class SignInRefusal(BaseModel):
    """The directory's answer when it will not sign this identity in (or could not read the request)."""

    error: str
    code: str = "sign_in_refused"
