"""Settings every service shares. Each service adds its own class with its own environment prefix.

Read once, in a service's wiring function; never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CommonSettings", "InsecureSettingError"]

_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "dev", "development", "please-change-me"}


class InsecureSettingError(ValueError):
    """A secret was left at a placeholder value outside the embedded development mode."""


class CommonSettings(BaseSettings):
    """``AQUEDUCT_*``: what every service needs to join the system."""

    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_", extra="ignore")

    # The embedded one-machine mode started by ``aqueduct up``. Outside it, secrets must be real.
    dev_mode: bool = False
    # One address, or every node of a NATS cluster comma-separated (each service may carry its own user).
    nats_url: str = "nats://127.0.0.1:4222"
    # Replicas of every JetStream stream, KV bucket and object store the product creates: 1 on a single
    # server, 3 on a three-node cluster (so losing one node loses neither data nor service). The directory
    # (and the proxy, for the files and batches stores) also bring existing ones to this count.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    data_dir: Path = Path(".aqueduct")
    config_file: Path | None = None
    # Key of the keyed token hash (HMAC-SHA256). Shared by the directory and the proxy.
    secret_key: SecretStr = SecretStr("")
    log_level: str = "INFO"
    # Public base URL of the UI, used in messages that tell users where to go (e.g. terms of service).
    public_ui_url: str = "http://127.0.0.1:8080"
    # Base URLs of the services, for the UI, the CLI and redirects.
    directory_url: str = "http://127.0.0.1:8001"
    auth_url: str = "http://127.0.0.1:8002"
    accounting_url: str = "http://127.0.0.1:8003"
    proxy_url: str = "http://127.0.0.1:8000"

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> CommonSettings:
        # Unset is allowed here: a service that does not use the key (accounting) is not given it.
        # A service that does reads ``secret_key_bytes``, which refuses an unset key.
        value = self.secret_key.get_secret_value()
        if value and not self.dev_mode:
            _check_secret_key(value)
        return self

    @property
    def secret_key_bytes(self) -> bytes:
        value = self.secret_key.get_secret_value()
        if not self.dev_mode:
            _check_secret_key(value)
        return (value or "aqueduct-dev-mode-insecure-key").encode()


def _check_secret_key(value: str) -> None:
    lowered = value.lower()
    looks_like_a_placeholder = lowered in _PLACEHOLDERS or any(
        marker in lowered for marker in ("replace", "change", "xxxx", "example")
    )
    if looks_like_a_placeholder or len(value) < 32:
        raise InsecureSettingError(
            "AQUEDUCT_SECRET_KEY must be a random value of at least 32 characters "
            "(e.g. `openssl rand -hex 32`); placeholders are only accepted with AQUEDUCT_DEV_MODE=true"
        )
