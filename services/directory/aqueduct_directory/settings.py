"""``AQUEDUCT_DIRECTORY_*``: the directory's own settings (the shared ones are in CommonSettings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aqueduct_libs.settings import CommonSettings

__all__ = ["DirectorySettings"]


class DirectorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_DIRECTORY_", extra="ignore")

    # AQUEDUCT_*: what every service shares (its own environment prefix; given whole by tests).
    common: CommonSettings = Field(default_factory=CommonSettings)

    host: str = "127.0.0.1"
    port: int = 8001
    # sqlite:///path (default <data_dir>/directory.sqlite) or postgresql://user:pass@host:port/db
    database_url: str | None = None
    max_tokens_per_user: int = 10
    max_service_accounts_per_team: int = 50
    # The org local accounts join on first sign-in when no SSO group maps them elsewhere.
    default_org: str = "default"
