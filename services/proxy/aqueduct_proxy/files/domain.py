"""Files as the OpenAI API shows them, and the rules of who may see and store what."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict

from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.domain.errors import BadRequestError, PayloadTooLargeError, ProxyError

__all__ = [
    "INPUT_PURPOSES",
    "FileNotFoundInStoreError",
    "FileTooLargeError",
    "QuotaExceededError",
    "StoredFile",
    "check_purpose",
    "new_file_id",
    "owner_of",
]

# Purposes a client may upload with; "batch_output" is written by the gateway only.
INPUT_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})


class FileNotFoundInStoreError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "file_not_found"


class FileTooLargeError(PayloadTooLargeError):
    code = "file_too_large"


class QuotaExceededError(ProxyError):
    status = 400
    type = "invalid_request_error"
    code = "file_quota_exceeded"


def new_file_id() -> str:
    return "file-" + uuid.uuid4().hex[:24]


def check_purpose(purpose: str | None) -> str:
    if not purpose:
        raise BadRequestError("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in INPUT_PURPOSES:
        allowed = ", ".join(sorted(INPUT_PURPOSES))
        raise BadRequestError(f"Invalid purpose '{purpose}'; use one of: {allowed}.", param="purpose")
    return purpose


class StoredFile(BaseModel):
    """One file's metadata; the bytes live in the object store under ``id``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    owner: str  # user id of the token's owner
    bytes: int
    created_at: int
    filename: str
    purpose: str
    sha256: str = ""

    @classmethod
    def new(
        cls, owner: str, filename: str, purpose: str, size: int, sha256: str = "", file_id: str | None = None
    ) -> StoredFile:
        return cls(
            id=file_id or new_file_id(),
            owner=owner,
            bytes=size,
            created_at=int(time.time()),
            filename=filename,
            purpose=purpose,
            sha256=sha256,
        )

    def to_openai(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


def owner_of(grant: TokenGrant) -> str:
    """Whose files and batches a token sees: a service account's own, else its user's.

    A service-account token answers to a user (its owner) but must not reach that user's personal
    files, and the user's personal tokens must not reach the service account's.
    """
    return f"sa-{grant.service_account_id}" if grant.service_account_id else grant.user_id
