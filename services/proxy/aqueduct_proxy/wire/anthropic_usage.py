"""Token usage in Anthropic's shape: ``input_tokens`` exclude the cached ones, which it reports apart
(``cache_read_input_tokens``, ``cache_creation_input_tokens``); a stream reports usage in
``message_start`` and, cumulative, in ``message_delta``."""

from __future__ import annotations

from typing import Any

import orjson

from aqueduct_proxy.domain.usage import TokenUsage, usage_from_anthropic

__all__ = ["AnthropicTally", "usage_from_anthropic"]


class AnthropicTally:
    """Follows one Anthropic event stream: the usage so far, content deltas counted, errors seen."""

    __slots__ = ("chunks", "errored", "fields")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.chunks = 0
        self.errored = False

    @property
    def usage(self) -> TokenUsage | None:
        return usage_from_anthropic(self.fields) if self.fields else None

    def observe(self, event: bytes) -> bool:
        """Account for one event; True for ``message_stop``, which the relay holds back."""
        if b"content_block_delta" in event:
            self.chunks += 1
            return False
        if b"message_stop" in event:
            return True
        if b'"usage"' not in event and b"event: error" not in event:
            return False
        data_at = event.find(b"data:")
        try:
            payload = orjson.loads(event[data_at + 5 :].strip()) if data_at >= 0 else None
        except orjson.JSONDecodeError:
            return False
        if not isinstance(payload, dict):
            return False
        kind = payload.get("type")
        if kind == "error":
            self.errored = True
        elif kind == "message_start" and isinstance(payload.get("message"), dict):
            usage = payload["message"].get("usage")
            if isinstance(usage, dict):
                self.fields.update(usage)
        elif kind == "message_delta" and isinstance(payload.get("usage"), dict):
            # Cumulative counts; a null or missing field keeps what message_start said.
            self.fields.update({k: v for k, v in payload["usage"].items() if v is not None})
        return False
