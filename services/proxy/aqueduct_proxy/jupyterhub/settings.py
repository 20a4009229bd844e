"""``AQUEDUCT_PROXY_JUPYTERHUB_*``: the JupyterHub token bridge (read once, in the wiring function)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["HubBridgeSettings"]


class HubBridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_PROXY_JUPYTERHUB_", extra="ignore")

    # Off by default: bearers that are not Aqueduct tokens are then simply refused.
    enabled: bool = False
    # Where the proxy reaches the auth service. Empty: AQUEDUCT_AUTH_URL (set this when that is a public
    # address the proxy cannot or should not use).
    auth_url: str = ""
    # How long an accepted hub token is served without asking the auth service again. A token revoked in
    # the hub stops working within this window plus the auth service's own cache window.
    cache_seconds: float = 60.0
    # How long a refused token is answered 401/403 without asking again (guessing stays cheap for us).
    refusal_cache_seconds: float = 10.0
    timeout_seconds: float = 5.0
    # On a user's first sign-in the directory provisions them; their grant reaches this proxy over the
    # bus a moment later. Wait this long for it before answering 503.
    user_wait_seconds: float = 5.0
