"""Batches as OpenAI defines them: the batch object, validation of the input JSONL, and result lines."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from aqueduct_proxy.domain.errors import BadRequestError, ProxyError

__all__ = [
    "ACTIVE",
    "ENDPOINTS",
    "Batch",
    "BatchLine",
    "BatchNotFoundError",
    "BatchStatus",
    "LineResult",
    "derived_file_id",
    "parse_input",
    "render_results",
]

ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"})
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


class BatchNotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "batch_not_found"


class BatchLine(BaseModel):
    """One request of a batch, as queued for a worker."""

    batch_id: str
    owner: str
    line: int  # 0-based position in the input file
    custom_id: str
    url: str
    body: dict[str, Any]


class Batch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    owner: str  # whose files and batches: files.domain.owner_of(grant)
    user_id: str = ""  # the user the token answers to (usage is theirs); "" in batches made before it
    # Whose limits, budgets and usage the lines count against. The token hash (never the value) lets
    # the worker find the token's current grant in the snapshot, so a revoked token stops its batch.
    # A JupyterHub token's batch has no hash: its lines run under the user's own grant (runs_as_user).
    token_id: str
    token_hash: str
    service_account_id: str | None = None
    team_id: str | None = None
    org_id: str
    endpoint: str
    input_file_id: str
    completion_window: str = "24h"
    status: BatchStatus = "validating"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    expired_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    metadata: dict[str, str] | None = None

    @property
    def runs_as_user(self) -> str | None:
        """The user whose own grant (snapshot key ``user.<id>``) the lines run under, for a batch created
        with a JupyterHub token (that grant has no token hash); None for an Aqueduct token's batch."""
        if not self.token_hash and self.user_id and self.token_id == f"user:{self.user_id}":
            return self.user_id
        return None

    @staticmethod
    def new_id() -> str:
        return "batch_" + uuid.uuid4().hex[:24]

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


def parse_input(data: bytes, batch_id: str, owner: str, endpoint: str, max_lines: int) -> list[BatchLine]:
    """Every line must be a request to the batch's endpoint with a unique ``custom_id``; else 400."""
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequestError(f"Line {number} of the input file is not valid JSON.") from None
        if not isinstance(item, dict):
            raise BadRequestError(f"Line {number} of the input file is not a JSON object.")
        custom_id, url, body = item.get("custom_id"), item.get("url"), item.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            raise BadRequestError(f"Line {number}: 'custom_id' must be a non-empty string.")
        if custom_id in seen:
            raise BadRequestError(f"Line {number}: the custom_id '{custom_id}' is used twice.")
        if item.get("method", "POST") != "POST":
            raise BadRequestError(f"Line {number}: only the POST method is supported.")
        if url != endpoint:
            raise BadRequestError(
                f"Line {number}: the url '{url}' differs from the batch's endpoint '{endpoint}'."
            )
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise BadRequestError(f"Line {number}: 'body' must be an object naming a model.")
        if body.get("stream"):
            raise BadRequestError(f"Line {number}: streaming is not supported in a batch.")
        seen.add(custom_id)
        lines.append(
            BatchLine(
                batch_id=batch_id, owner=owner, line=len(lines), custom_id=custom_id, url=url, body=body
            )
        )
        if len(lines) > max_lines:
            raise BadRequestError(f"The input file has more than {max_lines} requests.")
    if not lines:
        raise BadRequestError("The input file holds no requests.")
    return lines


class LineResult(BaseModel):
    """What a worker stored for one line, before acknowledging it: the answer and its usage event."""

    line: int
    custom_id: str
    status_code: int
    body: Any = None
    error: dict[str, Any] | None = None  # code and message when no upstream answer was obtained
    usage_event: str  # the UsageRecorded JSON, re-published as is after a crash (same event id)
    usage_event_id: str

    @property
    def succeeded(self) -> bool:
        return self.error is None and 200 <= self.status_code < 300


def derived_file_id(batch_id: str, kind: str) -> str:
    """The id of a batch's output or error file: the same on every attempt to finalize it."""
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


def render_results(batch_id: str, results: list[LineResult]) -> tuple[bytes, bytes]:
    """The output and error JSONL files, in input order, one line per ``custom_id``."""
    output: list[bytes] = []
    errors: list[bytes] = []
    for r in sorted(results, key=lambda r: r.line):
        request_id = f"req_{hashlib.sha256(f'{batch_id}:{r.line}'.encode()).hexdigest()[:24]}"
        record: dict[str, Any] = {"id": f"batch_req_{request_id[4:]}", "custom_id": r.custom_id}
        if r.error is not None:
            record.update(response=None, error=r.error)
        else:
            record.update(
                response={"status_code": r.status_code, "request_id": request_id, "body": r.body}, error=None
            )
        (output if r.succeeded else errors).append(orjson.dumps(record))
    return (b"\n".join(output) + b"\n" if output else b""), (b"\n".join(errors) + b"\n" if errors else b"")
