"""``AQUEDUCT_UI_*``: where the UI listens and how it signs users in. Read once, in ``bootstrap``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aqueduct_libs.settings import CommonSettings

__all__ = ["UISettings"]


class UISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_UI_", extra="ignore")

    # AQUEDUCT_*: what every service shares (its own environment prefix; given whole by tests).
    common: CommonSettings = Field(default_factory=CommonSettings)

    host: str = "127.0.0.1"
    port: int = 8080
    # Show "Sign in with SSO": explicitly, or because the auth service's OIDC issuer is configured in the
    # same environment (``aqueduct up`` shares one environment between the services).
    oidc_enabled: bool = False
    auth_oidc_issuer: str = Field(default="", validation_alias="AQUEDUCT_AUTH_OIDC_ISSUER")
    oidc_button_label: str = "Sign in with SSO"
    # The auth service as the browser reaches it (the SSO link); empty: AQUEDUCT_AUTH_URL. Differs when
    # the services talk over an internal network (docker compose: http://auth:8002 is not the browser's).
    public_auth_url: str = ""
    # Force the Secure flag on cookies; otherwise it is set when the request arrived over https.
    cookie_secure: bool = False
    # How long the refresh cookie lives when the auth service does not say (seconds).
    refresh_cookie_max_age: int = 14 * 24 * 3600
    # Timeout of calls to the directory, auth and accounting APIs (seconds).
    api_timeout: float = 15.0
    # The per-user token cap shown on the tokens page when the directory's /api/me does not report it
    # (``max_tokens_per_user``); keep it equal to the directory's cap, which is what is enforced.
    token_cap: int = 10
    # How long a user's roles read from the directory are kept before a page load reads them again
    # (seconds): a promotion or demotion made elsewhere shows within this long, without signing in again.
    roles_ttl: float = Field(default=2.0, ge=0, le=60)

    @property
    def sso_enabled(self) -> bool:
        return self.oidc_enabled or bool(self.auth_oidc_issuer.strip())
