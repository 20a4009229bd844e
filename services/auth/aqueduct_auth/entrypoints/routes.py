"""Routes of the session API: sign in, refresh, sign out, one-time code exchange, JWKS, local accounts."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from aqueduct_auth.adapters.store import LocalAccount
from aqueduct_auth.application.sessions import TokenPair
from aqueduct_auth.domain.errors import NotAllowedError
from aqueduct_auth.domain.sign_in import DirectoryUser
from aqueduct_auth.entrypoints.container import ClientIp, ContainerDep, CurrentUser

__all__ = ["router"]

router = APIRouter()


class PasswordSignIn(BaseModel):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


class RefreshBody(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=500)


class ExchangeBody(BaseModel):
    code: str = Field(min_length=1, max_length=500)
    # The secret of the browser that started the sign-in (the UI's ``aq_sso`` cookie).
    binding: str = Field(default="", max_length=500)


class TokenAnswer(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokenAnswer:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
        )


class NewLocalAccount(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str | None = Field(
        default=None,
        max_length=1000,
        description="Omit to have a one-time password made (returned once, to be replaced at first sign-in)",
    )
    email: str = Field(default="", max_length=320)
    name: str = Field(default="", max_length=200)
    groups: list[str] = Field(default_factory=list, max_length=100)
    admin: bool = False
    must_change_password: bool | None = Field(
        default=None, description="Default: true for a one-time password, false for a chosen one"
    )


class LocalAccountAnswer(BaseModel):
    username: str
    email: str
    name: str
    groups: list[str]
    admin: bool
    must_change_password: bool = False
    one_time_password: str | None = None  # only in the answer that made it


class PasswordChange(BaseModel):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000, description="The current (or one-time) password")
    new_password: str = Field(min_length=1, max_length=1000)


class OneTimePassword(BaseModel):
    username: str
    one_time_password: str


_NO_STORE = {"Cache-Control": "no-store"}


@router.post("/auth/token", response_model=TokenAnswer, tags=["sessions"])
async def sign_in(
    body: PasswordSignIn, container: ContainerDep, ip: ClientIp, response: Response
) -> TokenAnswer:
    """Sign in with a local account's username and password."""
    response.headers.update(_NO_STORE)
    pair = await container.local_accounts.sign_in(body.username, body.password, ip)
    return TokenAnswer.of(pair)


@router.post("/auth/refresh", response_model=TokenAnswer, tags=["sessions"])
async def refresh(body: RefreshBody, container: ContainerDep, response: Response) -> TokenAnswer:
    """Spend a refresh token for a new pair; the roles in the new access token are current."""
    response.headers.update(_NO_STORE)
    return TokenAnswer.of(await container.sessions.refresh(body.refresh_token))


class SignedOutAnswer(BaseModel):
    end_session_url: str


@router.post(
    "/auth/logout",
    status_code=204,
    tags=["sessions"],
    responses={200: {"model": SignedOutAnswer, "description": "Signed out; end the IdP's session too"}},
)
async def sign_out(body: RefreshBody, container: ContainerDep, ip: ClientIp) -> Response:
    """End the session of this refresh token; every service refuses its access tokens from then on.

    204, or for a single sign-on session at a provider that offers RP-initiated logout, 200 with the
    ``end_session_url`` to send the browser to, so the provider's session ends as well."""
    end_session_url = await container.sessions.sign_out(body.refresh_token, ip)
    if end_session_url:
        return JSONResponse(SignedOutAnswer(end_session_url=end_session_url).model_dump(), headers=_NO_STORE)
    return Response(status_code=204)


@router.post("/auth/exchange", response_model=TokenAnswer, tags=["sessions"])
async def exchange(body: ExchangeBody, container: ContainerDep, response: Response) -> TokenAnswer:
    """Exchange the one-time code of a single sign-on (given to the UI's /session/complete) for tokens."""
    response.headers.update(_NO_STORE)
    return TokenAnswer.of(await container.sessions.exchange(body.code, body.binding))


@router.get("/.well-known/jwks.json", tags=["keys"])
async def jwks(container: ContainerDep) -> dict[str, Any]:
    """The public keys that verify session tokens (also in the ``auth_keys`` KV bucket, key ``jwks``)."""
    return container.keys.jwks()


@router.post("/auth/keys/rotate", tags=["keys"])
async def rotate_keys(user: CurrentUser, container: ContainerDep) -> dict[str, Any]:
    """Admin: new signing key; the previous public key stays published so current sessions survive."""
    if not user.admin:
        raise NotAllowedError("only an Admin can rotate the signing keys")
    return await container.rotate_keys()


class HubTokenBody(BaseModel):
    token: str = Field(min_length=1, max_length=500)


class HubExchangeAnswer(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    user: DirectoryUser


@router.post("/auth/jupyterhub/exchange", response_model=HubExchangeAnswer, tags=["jupyterhub"])
async def jupyterhub_exchange(
    body: HubTokenBody, container: ContainerDep, ip: ClientIp, response: Response
) -> HubExchangeAnswer:
    """A JupyterHub user's API token, validated by the hub, for a session token and the directory user."""
    if container.jupyterhub is None:
        raise NotAllowedError("the JupyterHub bridge is off (AQUEDUCT_AUTH_JUPYTERHUB_API_URL)")
    response.headers.update(_NO_STORE)
    result = await container.jupyterhub.exchange(body.token, ip)
    return HubExchangeAnswer(
        access_token=result.access_token,
        expires_in=max(0, int(result.expires_at - time.time())),
        user=result.user,
    )


@router.post("/auth/local-users", response_model=LocalAccountAnswer, status_code=201, tags=["local accounts"])
async def add_local_user(
    body: NewLocalAccount, user: CurrentUser, container: ContainerDep, response: Response
) -> LocalAccountAnswer:
    """Admin: add a local account; it signs in at /auth/token and lands in the org of its groups (or is
    linked by email to a user the directory already has). Without a password a one-time password is
    made, shown only in this answer."""
    account, one_time = await container.local_accounts.add(
        user,
        body.username,
        body.password,
        body.email,
        body.name,
        body.groups,
        body.admin,
        body.must_change_password,
    )
    response.headers.update(_NO_STORE)
    return _account_answer(account, one_time)


@router.get("/auth/local-users", response_model=list[LocalAccountAnswer], tags=["local accounts"])
async def list_local_users(user: CurrentUser, container: ContainerDep) -> list[LocalAccountAnswer]:
    """Admin: every local account (never a password or its hash)."""
    return [_account_answer(a) for a in container.local_accounts.list(user)]


@router.post(
    "/auth/local-users/{username}/reset-password", response_model=OneTimePassword, tags=["local accounts"]
)
async def reset_password(
    username: str, user: CurrentUser, container: ContainerDep, response: Response
) -> OneTimePassword:
    """Admin: a new one-time password (shown only here); the user chooses their own at next sign-in."""
    password = await container.local_accounts.reset_password(user, username)
    response.headers.update(_NO_STORE)
    return OneTimePassword(username=username.strip().lower(), one_time_password=password)


@router.post("/auth/password", status_code=204, tags=["local accounts"])
async def change_password(body: PasswordChange, container: ContainerDep, ip: ClientIp) -> Response:
    """Replace a local account's password, proving the current one (a one-time password included)."""
    await container.local_accounts.change_password(body.username, body.password, body.new_password, ip)
    return Response(status_code=204)


def _account_answer(account: LocalAccount, one_time: str | None = None) -> LocalAccountAnswer:
    return LocalAccountAnswer(
        username=account.username,
        email=account.email,
        name=account.name,
        groups=account.groups,
        admin=account.admin,
        must_change_password=account.must_change_password,
        one_time_password=one_time,
    )
