"""What the routes need, wired once by ``bootstrap`` and reached through ``Annotated`` dependencies."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from aqueduct_auth.adapters.keys import KeyRing
from aqueduct_auth.application.local_accounts import LocalAccounts
from aqueduct_auth.application.ports import KeyPublisher
from aqueduct_auth.application.sessions import Sessions
from aqueduct_auth.domain.errors import AuthError
from aqueduct_libs.current_roles import CurrentRoles, RolesNotLoadedError
from aqueduct_libs.sessions import InvalidSessionError, SessionClaims, SessionVerifier
from aqueduct_libs.tokens import TOKEN_PREFIX

if TYPE_CHECKING:
    from aqueduct_auth.adapters.oidc import OidcClient
    from aqueduct_auth.application.jupyterhub import JupyterHubBridge

__all__ = [
    "ClientIp",
    "Container",
    "ContainerDep",
    "CurrentUser",
    "NotSignedInError",
    "client_ip",
]


@dataclass
class Container:
    sessions: Sessions
    local_accounts: LocalAccounts
    keys: KeyRing
    publish_jwks: KeyPublisher
    public_ui_url: str
    # Peers (addresses or networks) whose X-Forwarded-For is believed: the UI's.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    oidc: OidcClient | None = None
    jupyterhub: JupyterHubBridge | None = None
    # Verifies the bearer of this service's own admin routes, with this service's own keys.
    verifier: SessionVerifier = field(default_factory=SessionVerifier)
    # The current roles and active state of the bearer (the directory's auth snapshot): a session acts
    # with those, never with the roles written into its token at sign-in.
    roles: CurrentRoles = field(default_factory=CurrentRoles)

    def __post_init__(self) -> None:
        self.verifier.load_jwks(self.keys.jwks())

    async def rotate_keys(self) -> dict[str, Any]:
        self.keys.rotate()
        jwks = self.keys.jwks()
        self.verifier.load_jwks(jwks)
        await self.publish_jwks(jwks)
        return jwks


class NotSignedInError(AuthError):
    pass


def _container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


ContainerDep = Annotated[Container, Depends(_container)]


def client_ip(request: Request, container: ContainerDep) -> str | None:
    """The caller's address; a trusted proxy's (the UI's) X-Forwarded-For names the browser behind it."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer and _trusted(peer, container.trusted_proxies):
        candidate = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            return peer
    return peer


def _trusted(peer: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks if network.version == address.version)


ClientIp = Annotated[str | None, Depends(client_ip)]


async def _current_user(request: Request, container: ContainerDep) -> SessionClaims:
    """The bearer's claims with the roles the directory gives them now; a deactivated user is refused."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise NotSignedInError("sign in first: Authorization: Bearer <session token>")
    if credential.strip().startswith(TOKEN_PREFIX):
        # Local accounts and signing keys are managed with a session only, even by a management token.
        raise NotSignedInError(
            "an API token is not accepted here: local accounts, password resets and signing keys need a "
            "signed-in session (`aqueduct login`, or the web UI)"
        )
    try:
        return await container.roles.current(container.verifier.verify(credential.strip()))
    except InvalidSessionError as exc:
        raise NotSignedInError(f"invalid session token: {exc}") from exc
    except RolesNotLoadedError as exc:
        raise NotSignedInError(str(exc)) from exc


CurrentUser = Annotated[SessionClaims, Depends(_current_user)]
