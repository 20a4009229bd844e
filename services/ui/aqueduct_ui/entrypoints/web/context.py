"""Everything the web layer needs, wired once by ``bootstrap`` and kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import httpx
from fastapi.templating import Jinja2Templates

from aqueduct_libs.sessions import SessionClaims
from aqueduct_libs.settings import CommonSettings
from aqueduct_ui.adapters.api import AuthApi, ServiceApi, UserApi
from aqueduct_ui.adapters.jwks import KeyRing
from aqueduct_ui.application.roles import CurrentRoles
from aqueduct_ui.domain.viewer import Roles, Viewer
from aqueduct_ui.entrypoints.web.cookies import CookieKit
from aqueduct_ui.settings import UISettings

__all__ = ["Session", "WebContext"]


@dataclass(frozen=True)
class Session:
    access_token: str
    claims: SessionClaims
    roles: Roles | None = None  # as the directory has them now; None: those of the sign-in

    @property
    def viewer(self) -> Viewer:
        return Viewer.from_claims(self.claims, self.roles)


@dataclass
class WebContext:
    settings: UISettings
    common: CommonSettings
    cookies: CookieKit
    keyring: KeyRing
    templates: Jinja2Templates
    http: httpx.AsyncClient | None = field(default=None)
    roles: CurrentRoles = field(default_factory=CurrentRoles)

    def ready(self) -> bool:
        """Started (the HTTP client exists) and the session keys are loaded."""
        return self.http is not None and self.keyring.ready

    def _client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("the HTTP client is created at start-up; the app is not started")
        return self.http

    @property
    def auth(self) -> AuthApi:
        return AuthApi(ServiceApi(self._client(), self.common.auth_url))

    async def with_current_roles(self, session: Session) -> Session:
        directory = ServiceApi(self._client(), self.common.directory_url, session.access_token)
        return replace(session, roles=await self.roles.of(session.access_token, directory))

    def user_api(self, session: Session) -> UserApi:
        client = self._client()
        return UserApi(
            directory=ServiceApi(client, self.common.directory_url, session.access_token),
            accounting=ServiceApi(client, self.common.accounting_url, session.access_token),
            auth=ServiceApi(client, self.common.auth_url, session.access_token),
        )
