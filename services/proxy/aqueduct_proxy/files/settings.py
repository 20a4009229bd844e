"""``AQUEDUCT_PROXY_FILES_*``: limits of the files API (read once, in the wiring function)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["FilesSettings"]


class FilesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_PROXY_FILES_", extra="ignore")

    # Largest single upload. OpenAI allows 512 MB; the upload is spooled to disk past spool_memory_bytes.
    max_file_bytes: int = 512 * 1024 * 1024
    # Bytes one user may keep stored across all their files (batch outputs included).
    quota_bytes_per_user: int = 5 * 1024 * 1024 * 1024
    spool_memory_bytes: int = 8 * 1024 * 1024
    # Endpoints (slugs, comma-separated) whose upstream reads file parts itself. For every other endpoint
    # the gateway replaces file parts of chat and Responses requests with the files' extracted text.
    native_file_endpoints: str = ""
    # JetStream replicas of the object store and metadata bucket; unset: AQUEDUCT_NATS_REPLICAS.
    replicas: int | None = None
