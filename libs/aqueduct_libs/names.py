"""Names shared across services: JetStream streams, subjects, KV buckets, request/reply subjects.

These names are part of the public contract between services. Renaming one is a breaking change.
"""

from __future__ import annotations

__all__ = [
    "AUTH_ATTEMPTS_BUCKET",
    "AUTH_ATTEMPTS_MAX_AGE_SECONDS",
    "AUTH_EVENTS_STREAM",
    "AUTH_EVENTS_SUBJECT_PREFIX",
    "AUTH_KEYS_BUCKET",
    "AUTH_REVOKED_BUCKET",
    "AUTH_REVOKED_MAX_AGE_SECONDS",
    "AUTH_SNAPSHOT_BUCKET",
    "BATCHES_BUCKET",
    "BATCH_LINES_STREAM",
    "BATCH_LINES_SUBJECT_PREFIX",
    "BATCH_RESULTS_BUCKET",
    "DEAD_LETTERS_STREAM",
    "DEAD_LETTERS_SUBJECT_PREFIX",
    "DIRECTORY_EVENTS_STREAM",
    "DIRECTORY_EVENTS_SUBJECT_PREFIX",
    "DIRECTORY_RPC_SIGN_IN",
    "FILES_META_BUCKET",
    "FILES_OBJECT_STORE",
    "QUOTA_BUCKET",
    "SNAPSHOT_BUDGET_PREFIX",
    "SNAPSHOT_ENDPOINT_PREFIX",
    "SNAPSHOT_MCP_PREFIX",
    "SNAPSHOT_META_KEY",
    "SNAPSHOT_MODEL_PREFIX",
    "SNAPSHOT_PUSH_PREFIX",
    "SNAPSHOT_TOKEN_PREFIX",
    "SNAPSHOT_USER_PREFIX",
    "USAGE_STREAM",
    "USAGE_SUBJECT",
    "auth_event_subject",
    "batch_lines_subject",
    "dead_letter_subject",
    "directory_event_subject",
    "kv_safe",
    "snapshot_budget_key",
    "snapshot_endpoint_key",
    "snapshot_mcp_key",
    "snapshot_model_key",
    "snapshot_push_subject",
    "snapshot_token_key",
    "snapshot_user_key",
]

# JetStream stream holding the directory's integration events (published by its outbox relay).
DIRECTORY_EVENTS_STREAM = "DIRECTORY"
DIRECTORY_EVENTS_SUBJECT_PREFIX = "directory.events.v1"

# JetStream stream holding usage events (published by the proxy, consumed by accounting).
USAGE_STREAM = "USAGE"
USAGE_SUBJECT = "usage.v1.recorded"

# JetStream stream of dead letters: messages (or single events of a message) a consumer could not store
# after a bounded number of tries, each with the reason (``events.DeadLetter``), written by accounting.
# Subject ``deadletter.v1.<source stream, lower case>.<source sequence>[-<event index>]``; one message per
# subject (a letter dead-lettered again replaces itself), purged by subject once re-driven.
DEAD_LETTERS_STREAM = "DEAD_LETTERS"
DEAD_LETTERS_SUBJECT_PREFIX = "deadletter.v1"

# KV bucket with the proxy's auth snapshot, written by the directory's projection.
AUTH_SNAPSHOT_BUCKET = "auth_snapshot"
SNAPSHOT_TOKEN_PREFIX = "token."  # token.<keyed hash hex>  -> TokenGrant
# user.<user id> -> TokenGrant of the user themself (token_id "user:<id>", token_hash ""): what a
# credential that names a user rather than an API token (a JupyterHub token) may do.
SNAPSHOT_USER_PREFIX = "user."
SNAPSHOT_MODEL_PREFIX = "model."  # model.<model name key>   -> ModelRoute
SNAPSHOT_ENDPOINT_PREFIX = "endpoint."  # endpoint.<slug>   -> EndpointRoute
SNAPSHOT_MCP_PREFIX = "mcp."  # mcp.<server name>          -> McpServerRoute
SNAPSHOT_BUDGET_PREFIX = "budget."  # budget.<scope>.<id>  -> BudgetRule (scope: user, team, org)
SNAPSHOT_META_KEY = "meta"  # SnapshotMeta: the notification id the snapshot reflects
# Every change of the snapshot, also published as a plain message (``aqueduct_libs.snapshot_push``):
# <prefix>.<key> -> the new value, or an empty payload for a deleted key. Published by the directory only.
SNAPSHOT_PUSH_PREFIX = "directory.snapshot.v1"

# KV bucket with budget decisions, written by accounting, watched by the proxy.
QUOTA_BUCKET = "quota"  # keys: user.<id>, team.<id>, org.<id> -> QuotaDecision

# KV bucket holding the auth service's public signing keys (a JWKS document under key "jwks").
AUTH_KEYS_BUCKET = "auth_keys"

# KV bucket of ended sessions: <session id (the sid claim)> -> unix time (ASCII integer) after which no
# access token of that session can still be valid. Written by the auth service when a session ends,
# watched by every service that verifies session tokens. Entries age out on their own after the max age,
# which must stay above the access-token lifetime (the auth service refuses a longer lifetime).
AUTH_REVOKED_BUCKET = "auth_revoked"
AUTH_REVOKED_MAX_AGE_SECONDS = 3600

# KV bucket of sign-in attempts, shared by every auth process so a rate limit holds across all of them:
# <kv_safe("user:<username>") or kv_safe("ip:<address>")> -> JSON list of the window's attempt times.
# Written with compare-and-set on the entry's revision. The sign-in window must be shorter than the max age.
AUTH_ATTEMPTS_BUCKET = "auth_attempts"
AUTH_ATTEMPTS_MAX_AGE_SECONDS = 3600

# JetStream stream holding the auth service's integration events (sign-in, sign-out, failed attempts).
AUTH_EVENTS_STREAM = "AUTH"
AUTH_EVENTS_SUBJECT_PREFIX = "auth.events.v1"

# Object store for uploaded files (files and batches API).
FILES_OBJECT_STORE = "files"
FILES_META_BUCKET = "files_meta"  # <owner user id>.<file id> -> file metadata (JSON)

# Batches run by the gateway itself: batch records, the work queue of their lines, and line results.
BATCHES_BUCKET = "batches"  # <owner user id>.<batch id> -> batch record (JSON)
BATCH_LINES_STREAM = "BATCH_LINES"  # WorkQueue retention: one message per input line
BATCH_LINES_SUBJECT_PREFIX = "batch.lines"  # batch.lines.<batch id>
BATCH_RESULTS_BUCKET = "batch_results"  # <batch id>.<line number> -> the line's result, written before ack

# Request/reply: the auth service asks the directory to provision or resolve a signed-in user.
DIRECTORY_RPC_SIGN_IN = "directory.rpc.v1.sign_in"


def directory_event_subject(event_type: str) -> str:
    return f"{DIRECTORY_EVENTS_SUBJECT_PREFIX}.{event_type}"


def auth_event_subject(event_type: str) -> str:
    return f"{AUTH_EVENTS_SUBJECT_PREFIX}.{event_type}"


def batch_lines_subject(batch_id: str) -> str:
    return f"{BATCH_LINES_SUBJECT_PREFIX}.{batch_id}"


def dead_letter_subject(
    source_stream: str, source_sequence: int, index: int | None = None, key: str | None = None
) -> str:
    """``key`` (a subject token) names a letter that has no position in its stream (a row found out of
    bounds in storage) instead of the sequence and index."""
    if key is None:
        key = str(source_sequence) if index is None else f"{source_sequence}-{index}"
    return f"{DEAD_LETTERS_SUBJECT_PREFIX}.{source_stream.lower()}.{key}"


def snapshot_push_subject(key: str) -> str:
    return f"{SNAPSHOT_PUSH_PREFIX}.{key}"


def snapshot_token_key(token_hash: str) -> str:
    return f"{SNAPSHOT_TOKEN_PREFIX}{token_hash}"


_KV_SAFE = frozenset("-_/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def kv_safe(name: str) -> str:
    """Encode a free-form name (a model such as ``llama3:8b``) into a valid NATS KV key segment.

    Characters outside ``[-_/A-Za-z0-9]`` become ``=XX`` (hex), so the mapping is reversible and '.'
    never splits a name into two key tokens.
    """
    return "".join(c if c in _KV_SAFE else "".join(f"={b:02X}" for b in c.encode()) for c in name)


def snapshot_model_key(model_name: str) -> str:
    return f"{SNAPSHOT_MODEL_PREFIX}{kv_safe(model_name)}"


def snapshot_mcp_key(name: str) -> str:
    return f"{SNAPSHOT_MCP_PREFIX}{kv_safe(name)}"


def snapshot_endpoint_key(slug: str) -> str:
    return f"{SNAPSHOT_ENDPOINT_PREFIX}{kv_safe(slug)}"


def snapshot_budget_key(scope: str, scope_id: str) -> str:
    return f"{SNAPSHOT_BUDGET_PREFIX}{scope}.{kv_safe(scope_id)}"


def snapshot_user_key(user_id: str) -> str:
    return f"{SNAPSHOT_USER_PREFIX}{kv_safe(user_id)}"


def inbox_prefix(user: str | None) -> str:
    """Where a NATS user's replies arrive: ``_INBOX_<user>`` for a per-service user (its allow-list lets it
    read only these, so no service reads another's replies), nats-py's ``_INBOX`` without one."""
    return f"_INBOX_{user}" if user else "_INBOX"
