"""Reading token usage out of upstream answers, whole or streamed.

Streaming: the upstream is always asked for a final usage chunk; ``StreamTally`` watches the server-sent
events go by, keeps that usage, says whether the client wanted that chunk, and counts content chunks so a
stream cut short still has an estimate of what was produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aqueduct_libs.bounds import MAX_TOKENS, clamp_tokens

__all__ = ["StreamTally", "TokenUsage", "usage_from_anthropic", "usage_from_body"]


@dataclass(slots=True)
class TokenUsage:
    """Token counts by class, as the gateway records them whatever shape the provider reported.

    ``input_tokens`` count every prompt token, cached or not (as OpenAI counts; Anthropic reports its
    cached ones apart); ``cached_tokens`` (read from the cache) and the cache writes kept 5 minutes and
    1 hour are parts of it. ``output_tokens`` count every generated token; ``reasoning_tokens`` are part
    of it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0


def _int(value: Any) -> int:
    # An upstream's count as accounting accepts it: a negative or non-integer count is 0, an absurd one
    # (beyond aqueduct_libs.bounds.MAX_TOKENS, which would overflow the cost) is counted as the maximum.
    return clamp_tokens(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cache_writes(usage: dict[str, Any]) -> tuple[int, int]:
    """Anthropic's cache writes, 5-minute and 1-hour; a total without the split counts as 5 minutes
    (its default lifetime)."""
    total = _int(usage.get("cache_creation_input_tokens"))
    split = _dict(usage.get("cache_creation"))
    hour = _int(split.get("ephemeral_1h_input_tokens"))
    five = _int(split.get("ephemeral_5m_input_tokens")) if split else total
    if split and five + hour < total:
        five = total - hour
    return five, hour


def _from_usage(usage: Any) -> TokenUsage | None:
    if not isinstance(usage, dict):
        return None
    if (
        "cache_read_input_tokens" in usage
        or "cache_creation_input_tokens" in usage
        or ("input_tokens" in usage and "input_tokens_details" not in usage and "total_tokens" not in usage)
    ):  # Anthropic's shape: its input_tokens leave out what was read from or written to the cache
        read = _int(usage.get("cache_read_input_tokens"))
        five, hour = _cache_writes(usage)
        fresh = _int(usage.get("input_tokens") if "input_tokens" in usage else usage.get("prompt_tokens"))
        if "prompt_tokens" in usage:  # LiteLLM's chat usage for Anthropic: prompt_tokens include them
            fresh = max(fresh - read - five - hour, 0)
        output = _int(
            usage.get("output_tokens") if "output_tokens" in usage else usage.get("completion_tokens")
        )
        reasoning = _int(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))
        return TokenUsage(min(fresh + read + five + hour, MAX_TOKENS), output, read, five, hour, reasoning)
    if "input_tokens" in usage or "output_tokens" in usage:  # Responses API naming
        return TokenUsage(
            _int(usage.get("input_tokens")),
            _int(usage.get("output_tokens")),
            _int(_dict(usage.get("input_tokens_details")).get("cached_tokens")),
            reasoning_tokens=_int(_dict(usage.get("output_tokens_details")).get("reasoning_tokens")),
        )
    return TokenUsage(
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        _int(_dict(usage.get("prompt_tokens_details")).get("cached_tokens")),
        reasoning_tokens=_int(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens")),
    )


def usage_from_anthropic(usage: Any) -> TokenUsage | None:
    """Usage in Anthropic's shape (a Messages answer's, or a stream's merged ``message_start`` and
    ``message_delta`` counts)."""
    if not isinstance(usage, dict):
        return None
    return _from_usage({**usage, "cache_read_input_tokens": usage.get("cache_read_input_tokens") or 0})


def usage_from_body(data: Any) -> TokenUsage | None:
    """Usage of a whole (non-streamed) JSON answer, or None when it reports none."""
    if not isinstance(data, dict):
        return None
    return _from_usage(data.get("usage"))


# Byte markers, tested with ``in`` one by one (``any`` over a generator cost about as much as the rest
# of a chunk's relay, on every chunk of every stream).
_PROMPT_TOKENS, _INPUT_TOKENS = b'"prompt_tokens"', b'"input_tokens"'
_TOKENS = b'_tokens"'  # the end of both: one scan of a chunk without usage, not two
_CONTENT, _TEXT, _DELTA, _DELTA_SPACED = b'"content":', b'"text":', b'"delta":"', b'"delta": "'
# What after a ``"content":`` makes a chunk carry no output: ``"content": ""``, ``"content":null``...
_NO_CONTENT = (b' ""', b'""', b" null", b"null")


class StreamTally:
    """Follows one SSE stream: usage seen, content chunks counted."""

    __slots__ = ("chunks", "client_wants_usage", "usage")

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.usage: TokenUsage | None = None
        self.chunks = 0

    def observe(self, event: bytes) -> bool:
        """Account for one complete event (its lines up to the blank line); True if it goes to the client."""
        # At the start (a chat stream's events: a cheap test first), or after an "event: ..." line in
        # the Responses API's streams.
        data_at = 0 if event.startswith(b"data:") else event.find(b"data:")
        if data_at < 0:
            return True
        # Cheap byte checks first: most chunks carry neither usage nor anything but a delta.
        if _TOKENS in event and (_PROMPT_TOKENS in event or _INPUT_TOKENS in event):
            try:
                payload = orjson.loads(event[data_at + 5 :].strip())
            except orjson.JSONDecodeError:
                return True
            usage = _from_usage(payload.get("usage")) if isinstance(payload, dict) else None
            if usage is None and isinstance(payload, dict) and isinstance(payload.get("response"), dict):
                usage = _from_usage(payload["response"].get("usage"))  # Responses API "response.completed"
            if usage is not None:
                self.usage = usage
                if isinstance(payload, dict) and payload.get("choices") == [] and not self.client_wants_usage:
                    return False  # the usage-only chunk we asked for on the client's behalf
                return True
        # A chunk with output: a content, text or delta marker and no empty or null content. Every empty
        # or null marker starts with ``"content":``, so only what follows each of those is looked at
        # (one scan of the event where testing each marker took five).
        at = event.find(_CONTENT)
        if at < 0:
            if _TEXT in event or _DELTA in event or _DELTA_SPACED in event:
                self.chunks += 1
            return True
        while at >= 0:
            at += len(_CONTENT)
            if event.startswith(_NO_CONTENT, at):
                return True
            at = event.find(_CONTENT, at)
        self.chunks += 1
        return True
