"""``AQUEDUCT_AUTH_*``: where the auth service listens, how long sessions live, how users sign in.

Read once, in ``bootstrap``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from aqueduct_libs.names import AUTH_ATTEMPTS_MAX_AGE_SECONDS, AUTH_REVOKED_MAX_AGE_SECONDS
from aqueduct_libs.settings import CommonSettings

__all__ = ["AuthSettings"]


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_AUTH_", extra="ignore")

    # AQUEDUCT_*: what every service shares (its own environment prefix; given whole by tests).
    common: CommonSettings = Field(default_factory=CommonSettings)

    host: str = "127.0.0.1"
    port: int = 8002
    # Empty: SQLite at <data_dir>/auth/auth.sqlite. Else sqlite:///path or postgresql://...
    database_url: str = ""
    # PEM of the ES256 signing key. Empty: generated on first start under <data_dir>/auth/ (mode 0600).
    # Several auth processes behind one URL must share it.
    signing_key: SecretStr = SecretStr("")
    # At most the revoked-sessions bucket's max age (less a margin), so a signed-out session stays refused
    # for as long as any of its access tokens could be presented.
    access_token_ttl: int = Field(default=15 * 60, gt=0, le=AUTH_REVOKED_MAX_AGE_SECONDS - 60)
    refresh_token_ttl: int = 14 * 24 * 3600
    # A spent refresh token seen again within this window is refused without ending the session
    # (two tabs refreshing at once); later, it is taken as stolen and the session ends.
    refresh_reuse_grace_seconds: float = 10.0
    # The one-time code the UI exchanges after single sign-on.
    exchange_code_ttl: int = 60

    bootstrap_admin_username: str = ""
    bootstrap_admin_password: SecretStr = SecretStr("")

    # Sign-in attempts allowed per window, per username and per client address, counted across all auth
    # processes (in the auth_attempts KV bucket; in this process alone while the bus is unreachable).
    sign_in_attempts_per_username: int = Field(default=10, gt=0)
    sign_in_attempts_per_ip: int = Field(default=30, gt=0)
    sign_in_window_seconds: int = Field(default=60, gt=0, le=AUTH_ATTEMPTS_MAX_AGE_SECONDS)
    # Peers whose X-Forwarded-For is believed (the UI signs users in server-side): addresses or
    # networks, e.g. ["127.0.0.1", "::1", "172.16.0.0/12"] when the UI runs in a container network.
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]

    # How long to wait for the directory's sign-in answer (seconds).
    directory_timeout: float = 5.0

    # Single sign-on. Empty issuer: OIDC is off.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_scopes: str = "openid email profile groups"
    oidc_groups_claim: str = "groups"
    oidc_admin_group: str = ""
    # Treat the provider's email claims as verified even without email_verified (single-tenant IdPs only).
    oidc_trust_email: bool = False
    # Empty: <AQUEDUCT_AUTH_URL>/auth/oidc/callback.
    oidc_redirect_uri: str = ""
    # Signing out ends the provider's session too (RP-initiated logout), where the provider offers an
    # end_session_endpoint; the browser then comes back here (register it at the provider as a
    # post-logout redirect URI). Empty: <AQUEDUCT_PUBLIC_UI_URL>/login.
    oidc_end_provider_session: bool = True
    oidc_post_logout_redirect_uri: str = ""

    # JupyterHub token bridge. Empty: off.
    jupyterhub_api_url: str = ""
    jupyterhub_cache_seconds: int = 60
    # A scope the hub token must carry, e.g. "access:services!service=aqueduct". Empty: any user token.
    jupyterhub_required_scope: str = ""
    # Members of this hub group are Admin. Empty: no hub user is made Admin by the bridge.
    jupyterhub_admin_group: str = ""
