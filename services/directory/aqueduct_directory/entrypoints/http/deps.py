"""Dependencies every route shares: the application and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.domain.errors import PermissionDeniedError
from aqueduct_directory.domain.policy import Principal
from aqueduct_libs.sessions import InvalidSessionError, SessionVerifier
from aqueduct_libs.tokens import TOKEN_PREFIX, hash_token

__all__ = ["CurrentUser", "DirectoryDep", "authenticate"]


def get_directory(request: Request) -> DirectoryApp:
    return request.app.state.directory


DirectoryDep = Annotated[DirectoryApp, Depends(get_directory)]


def authenticate(directory: DirectoryApp, verifier: SessionVerifier, credential: str) -> Principal:
    """A session token from the auth service, or a personal API token; roles come from the directory (an
    API token without management access acts as a plain User: ``Principal.as_api_token``)."""
    if credential.startswith(TOKEN_PREFIX):
        token_id = directory.state.token_by_hash.get(hash_token(credential, directory.secret_key))
        token = directory.state.tokens.get(token_id or "")
        if token is None or not token.is_live(directory.clock()) or token.service_account_id:
            raise _unauthorized("unknown, expired or service-account API token")
        try:
            return directory.principal(token.user_id).as_api_token(getattr(token, "management", False))
        except PermissionDeniedError as exc:
            raise _unauthorized("the user is unknown or deactivated") from exc
    try:
        user_id = verifier.verify(credential).sub
    except InvalidSessionError as exc:
        raise _unauthorized(f"invalid session token: {exc}") from exc
    try:
        return directory.principal(user_id)
    except PermissionDeniedError as exc:
        raise _unauthorized("the user is unknown or deactivated") from exc


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def get_principal(
    request: Request, directory: DirectoryDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise _unauthorized("missing bearer credential")
    return authenticate(directory, request.app.state.verifier, credential.strip())


CurrentUser = Annotated[Principal, Depends(get_principal)]
