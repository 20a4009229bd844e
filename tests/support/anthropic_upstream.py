"""An Anthropic Messages API test upstream, so the gateway's Anthropic path meets Anthropic's real format.

Run it as a process: ``python -m tests.support.anthropic_upstream --port 9100 [--api-key KEY]``. It
answers ``POST /v1/messages`` (the path LiteLLM calls: ``api_base`` + ``/v1/messages``) deterministically,
like ``tests/support/upstream.py``:

- input tokens = number of whitespace-separated words in ``system`` and all message contents,
- output tokens = ``max_tokens`` (Anthropic requires it); the answer is that many words "tok0 tok1 ...".
- ``stream: true`` answers with Anthropic's event sequence: ``message_start`` (with
  ``usage.input_tokens``), ``content_block_start``, ``ping``, one ``content_block_delta`` (``text_delta``)
  per word, ``content_block_stop``, ``message_delta`` (with the cumulative ``usage.output_tokens``) and
  ``message_stop``.

Tools: when ``tool_choice`` is ``{"type": "any"}`` or ``{"type": "tool", "name": ...}``, the answer is
one ``tool_use`` block for that tool (else the first), its input giving each schema property a value
(strings ``"tok<i>"``, numbers 0, booleans true), ``stop_reason: "tool_use"``, 1 output token plus one per
property; streamed as ``content_block_start`` and two ``input_json_delta`` pieces.
Prompt caching, per request, via headers: ``x-fake-cache-read: N``, ``x-fake-cache-write-5m: N`` and
``x-fake-cache-write-1h: N`` report that many of the prompt's words as read from or written to the cache;
``input_tokens`` is then what is left (Anthropic's ``input_tokens`` exclude cached tokens), and the usage
carries ``cache_read_input_tokens``, ``cache_creation_input_tokens`` and ``cache_creation`` split by TTL.
``POST /v1/messages/count_tokens`` answers ``{"input_tokens": <words>}``.

Every request must carry ``anthropic-version`` (else 400) and ``x-api-key`` (else 401; when ``--api-key``
is given the key must equal it). Errors use Anthropic's body ``{"type": "error", "error": {"type",
"message"}}``. ``GET /_requests`` returns what was received (path, headers, body; the last 200),
``DELETE /_requests`` clears them. ``POST /_fail {"status": 429, "times": 3}`` makes the next N requests
fail with that status; ``POST /_fail {"stream_error_after": 2, "times": 1}`` makes the next N streams
send an ``error`` event (``overloaded_error``) after that many text deltas, as Anthropic does mid-stream;
``POST /_fail {"delay": 2.0, "times": 1}`` makes the next N requests wait that long before answering;
``POST /_fail {"word_delay": 0.1, "times": 1}`` makes the next N streams wait that long before each word.
A stream whose reader went away is marked ``"aborted": true`` in ``/_requests``, with the words it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import deque
from typing import Any

from aiohttp import web

__all__ = ["build_app", "count_words"]

# Anthropic's error type for each status it documents.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def count_words(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(v) for v in value)
    if isinstance(value, dict):
        if "text" in value:
            return count_words(value["text"])
        if "content" in value:
            return count_words(value["content"])
    return 0


def _forced_tool(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("name"), str)]
    choice = body.get("tool_choice") or {}
    if not tools or choice.get("type") not in ("any", "tool"):
        return None
    tool = next((t for t in tools if t["name"] == choice.get("name")), tools[0])
    properties = (tool.get("input_schema") or {}).get("properties") or {}
    values = {"integer": 0, "number": 0, "boolean": True}
    arguments = {
        name: (f"tok{i}" if (spec or {}).get("type", "string") == "string" else values.get(spec.get("type")))
        for i, (name, spec) in enumerate(properties.items())
    }
    return tool["name"], arguments


def _usage(request: web.Request, prompt: int, output: int) -> dict[str, Any]:
    read = int(request.headers.get("x-fake-cache-read", "0"))
    five = int(request.headers.get("x-fake-cache-write-5m", "0"))
    hour = int(request.headers.get("x-fake-cache-write-1h", "0"))
    usage: dict[str, Any] = {"input_tokens": max(prompt - read - five - hour, 0), "output_tokens": output}
    if read or five or hour:
        usage["cache_read_input_tokens"] = read
        usage["cache_creation_input_tokens"] = five + hour
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}
    return usage


def _error(status: int, message: str) -> web.Response:
    kind = _ERROR_TYPES.get(status, "api_error")
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic:
    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self.requests: deque[dict[str, Any]] = deque(maxlen=200)
        self.fail_status = 0
        self.fail_times = 0
        self.stream_error_after = -1
        self.stream_error_times = 0
        self.delay = 0.0
        self.delay_times = 0
        self.word_delay = 0.0
        self.word_delay_times = 0

    def _refusal(self, request: web.Request) -> web.Response | None:
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        key = request.headers.get("x-api-key")
        if not key:
            return _error(401, "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            return _error(401, "invalid x-api-key")
        if self.fail_times > 0:
            self.fail_times -= 1
            return _error(self.fail_status, "injected failure")
        return None

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record: dict[str, Any] = {
            "path": request.path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
        }
        self.requests.append(record)
        if self.delay_times > 0:
            self.delay_times -= 1
            await asyncio.sleep(self.delay)
        if (refusal := self._refusal(request)) is not None:
            return refusal
        if not isinstance(body.get("max_tokens"), int):
            return _error(400, "max_tokens: Field required")
        input_tokens = count_words(body.get("system")) + count_words(body.get("messages"))
        tool = _forced_tool(body)
        words = [] if tool else [f"tok{i}" for i in range(body["max_tokens"])]
        usage = _usage(request, input_tokens, 1 + len(tool[1]) if tool else len(words))
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "stop_sequence": None,
        }
        if not body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": " ".join(words)}]
            if tool:
                content = [{"type": "tool_use", "id": "toolu_fake", "name": tool[0], "input": tool[1]}]
            return web.json_response(
                {
                    **message,
                    "content": content,
                    "stop_reason": "tool_use" if tool else "max_tokens",
                    "usage": usage,
                }
            )
        error_after = -1
        if self.stream_error_times > 0:
            self.stream_error_times -= 1
            error_after = self.stream_error_after
        word_delay = 0.0
        if self.word_delay_times > 0:
            self.word_delay_times -= 1
            word_delay = self.word_delay
        try:
            return await self._stream(request, message, usage, words, error_after, word_delay, record, tool)
        except (ConnectionResetError, asyncio.CancelledError):
            record["aborted"] = True
            raise

    async def _stream(
        self,
        request: web.Request,
        message: dict[str, Any],
        usage: dict[str, Any],
        words: list[str],
        error_after: int,
        word_delay: float,
        record: dict[str, Any],
        tool: tuple[str, dict[str, Any]] | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        # Anthropic reports a provisional output count at the start; message_delta carries the total.
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await response.write(_sse("message_start", {"type": "message_start", "message": start}))
        block: dict[str, Any] = {"type": "text", "text": ""}
        if tool:
            block = {"type": "tool_use", "id": "toolu_fake", "name": tool[0], "input": {}}
        await response.write(
            _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        )
        if tool:
            arguments = json.dumps(tool[1])
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                await response.write(
                    _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
                )
        await response.write(_sse("ping", {"type": "ping"}))
        for i, word in enumerate(words):
            if i == error_after:
                failure = {"type": "overloaded_error", "message": "Overloaded"}
                await response.write(_sse("error", {"type": "error", "error": failure}))
                await response.write_eof()
                return response
            if word_delay:
                await asyncio.sleep(word_delay)
            delta = {"type": "text_delta", "text": (" " if i else "") + word}
            await response.write(
                _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            )
            record["words_sent"] = i + 1
        await response.write(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        await response.write(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use" if tool else "max_tokens", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        await response.write(_sse("message_stop", {"type": "message_stop"}))
        await response.write_eof()
        return response

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(
            {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
            }
        )
        if (refusal := self._refusal(request)) is not None:
            return refusal
        return web.json_response(
            {"input_tokens": count_words(body.get("system")) + count_words(body.get("messages"))}
        )

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.requests))

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.requests.clear()
        return web.json_response({"cleared": True})

    async def set_failures(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "word_delay" in body:
            self.word_delay = float(body["word_delay"])
            self.word_delay_times = int(body.get("times", 1))
        elif "delay" in body:
            self.delay = float(body["delay"])
            self.delay_times = int(body.get("times", 1))
        elif "stream_error_after" in body:
            self.stream_error_after = int(body["stream_error_after"])
            self.stream_error_times = int(body.get("times", 1))
        else:
            self.fail_status = int(body.get("status", 500))
            self.fail_times = int(body.get("times", 1))
        return web.json_response({"ok": True})


def build_app(api_key: str | None = None) -> web.Application:
    fake = FakeAnthropic(api_key)
    app = web.Application(client_max_size=64 * 1024**2)
    app.add_routes(
        [
            web.post("/v1/messages", fake.messages),
            web.post("/v1/messages/count_tokens", fake.count_tokens),
            web.get("/_requests", fake.get_requests),
            web.delete("/_requests", fake.clear_requests),
            web.post("/_fail", fake.set_failures),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=None, help="the only x-api-key accepted (default: any)")
    args = parser.parse_args()
    web.run_app(build_app(args.api_key), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
