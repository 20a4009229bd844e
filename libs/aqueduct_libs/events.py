"""Integration events: the public, versioned contract between services.

Rules: a version only ever gains optional fields. A breaking change of an envelope is a new version with a
new subject; a breaking change of one directory event type is a new version of that type, read by every
consumer through its upcaster (``aqueduct_libs.directory_events``, ``docs/contracts.md``).
Stored domain events inside the directory are *not* this contract; the directory translates them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from aqueduct_libs.directory_events import DirectoryEventData, parse_directory_event
from aqueduct_libs.request_id import current_request_id

__all__ = ["AuthEvent", "DeadLetter", "DirectoryEvent", "UsageRecorded", "new_event_id", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid4().hex


class UsageRecorded(BaseModel):
    """One served request (model call, MCP tool call or batch line), published by the proxy.

    Subject: ``names.USAGE_SUBJECT``. A message holds one event, or a JSON array of up to 100 (the proxy
    groups them); its ``Nats-Msg-Id`` is the ``event_id`` of a lone event or a hash of a group's ids.
    Consumers deduplicate by ``event_id`` (accounting does), so a redelivered or re-published event is
    counted once however it was grouped (docs/contracts.md).
    """

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id)
    occurred_at: datetime = Field(default_factory=utcnow)  # when the request arrived
    kind: Literal["model", "mcp", "batch"] = "model"
    token_id: str
    user_id: str
    service_account_id: str | None = None
    team_id: str | None = None
    org_id: str
    endpoint: str  # endpoint slug
    model: str  # the model's name (for an alias, the model it maps to; "" for routes without a model)
    route: str  # e.g. "/v1/chat/completions"
    status_code: int
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # read from the prompt cache (part of input_tokens)
    # Written to the prompt cache, kept 5 minutes or 1 hour (parts of input_tokens; Anthropic-style caches).
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0  # part of output_tokens
    alias: str | None = None  # the alias the client named; model is then the model it maps to
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    streamed: bool = False
    cut_short: bool = False
    tool: str | None = None  # MCP tool name, for kind == "mcp"
    batch_id: str | None = None
    # The answer's x-request-id (the client's own when sane): one id from the client's log to this row.
    # Built while serving a request, an event takes that request's id by default.
    request_id: str | None = Field(default_factory=current_request_id)


class DirectoryEvent(BaseModel):
    """Envelope of every integration event the directory publishes through its outbox relay.

    Subject: ``names.directory_event_subject(type)``; ``Nats-Msg-Id`` is ``str(notification_id)``.
    ``data`` holds the fields of version ``version`` of ``type``'s model in ``aqueduct_libs.directory_events``
    (never a token value or a secret; token hashes are allowed); ``payload()`` parses it, upcast to the
    newest version this code knows. Events published before ``version`` existed are version 1.
    """

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    notification_id: int  # position in the directory's notification log; total order of all events
    type: str  # past tense, e.g. "TokenIssued"
    aggregate_type: str  # "Org", "Team", "User", "Token", ...
    aggregate_id: str
    aggregate_version: int
    actor: str  # user id of who caused it, or "system"
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
    version: int = 1  # of the type's model (added within schema version 1: absent means 1)

    def payload(self) -> DirectoryEventData:
        """``data`` as the typed model of ``type`` (the newest version, upcast from ``version``).

        Raises ``aqueduct_libs.event_versions.UnknownEventError`` for a type or version this code does
        not know (e.g. from a newer directory), pydantic's ``ValidationError`` for data its model refuses."""
        return parse_directory_event(self.type, self.version, self.data)


class AuthEvent(BaseModel):
    """A sign-in, sign-out or failed sign-in attempt, published by the auth service.

    Subject: ``names.auth_event_subject(type)``; ``Nats-Msg-Id`` is ``event_id``. Never carries a
    password, a token or a code; ``subject`` is the identity as signed in (``local:<username>``, ...).
    """

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id)
    type: Literal["SignedIn", "SignedOut", "SignInFailed"]
    occurred_at: datetime = Field(default_factory=utcnow)
    subject: str = ""  # identity as presented; for failures, what was tried
    user_id: str | None = None  # directory user id, once resolved
    session_id: str | None = None
    method: str = ""  # "local", "oidc", "refresh", "jupyterhub"
    client_ip: str | None = None
    reason: str | None = None  # for SignInFailed: "invalid_credentials", "rate_limited", "refused", ...


class DeadLetter(BaseModel):
    """A message, or one event of a message, that a consumer could not store, and why.

    Subject: ``names.dead_letter_subject(source_stream, source_sequence, index)`` in the
    ``names.DEAD_LETTERS_STREAM`` stream; ``Nats-Msg-Id`` is the subject. ``payload`` is the message (or the
    event, for one event of an array) as it was published, so that re-driving it once the cause is fixed
    stores it exactly as it would have been (consumers deduplicate, so a re-drive counts nothing twice).
    """

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    source_stream: str  # e.g. "USAGE"
    source_subject: str
    source_sequence: int  # the message's sequence in its stream
    index: int | None = None  # the event's position in a message holding a JSON array; None: the message
    consumer: str  # the durable consumer that gave up
    reason: str
    tries: int = 1
    failed_at: datetime = Field(default_factory=utcnow)
    payload: str  # the message or event text (UTF-8; undecodable bytes replaced)
