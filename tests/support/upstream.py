"""An OpenAI-compatible test upstream: the only stand-in allowed, in place of paid model providers.

Run it as a process: ``python -m tests.support.upstream --port 9000``. It answers deterministically so
tests can check exact token counts:

- input tokens = number of whitespace-separated words in all message contents (or the prompt/input),
- output tokens = ``max_tokens`` (or ``max_completion_tokens``) if given, else 5; the answer is that many
  words "tok0 tok1 ...".
- Streaming sends one chunk per output word, ``stream_delay`` seconds apart (query param or the
  ``x-fake-delay`` header, default 0), plus a usage chunk when ``stream_options.include_usage`` is true.

- Tools: when ``tool_choice`` is ``"required"`` or names a function, the answer is one call of that
  function (else the first tool) with ``finish_reason: "tool_calls"``; its arguments give each property of
  the tool's schema a value (strings ``"tok<i>"``, numbers 0, booleans true); it counts 1 output token plus
  one per argument. Streamed, the call comes as a first delta (id, name) and the arguments in two pieces.
- Usage details, per request, via headers: ``x-fake-cached-tokens: N`` reports N of the prompt tokens as
  cached (``prompt_tokens_details.cached_tokens``), ``x-fake-reasoning-tokens: N`` adds N reasoning tokens to
  the completion (``completion_tokens_details.reasoning_tokens``, counted inside ``completion_tokens``).

Fault injection, per request, via headers: ``x-fake-status: 500`` answers that status;
``x-fake-break-after: N`` closes the connection after N streamed chunks. ``GET /_requests`` returns the
bodies received (the last 200), so tests can see what the gateway forwarded; ``DELETE /_requests``
clears them; ``POST /_fail {"status": 500, "times": 3}`` makes the next N requests fail;
``POST /_usage {"prompt_tokens": 1e30, "times": 1}`` makes the next N chat answers report that
``prompt_tokens`` (any JSON number, however absurd, as a faulty upstream might).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import web

__all__ = ["build_app", "count_words"]


def count_words(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(v) for v in value)
    if isinstance(value, dict):
        if value.get("type") in ("text", "input_text"):
            return count_words(value.get("text"))
        if "content" in value:
            return count_words(value["content"])
        if "text" in value:
            return count_words(value["text"])
        return 0
    return 0


def _output_tokens(body: dict[str, Any]) -> int:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int):
            return int(body[key])
    return 5


def _words(n: int) -> list[str]:
    return [f"tok{i}" for i in range(n)]


def _forced_tool(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The function call the answer makes (see the module doc), or None for a text answer."""
    tools = [t.get("function") for t in body.get("tools") or () if isinstance(t, dict)]
    tools = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
    choice = body.get("tool_choice")
    if not tools or not (choice == "required" or isinstance(choice, dict)):
        return None
    wanted = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    tool = next((t for t in tools if t["name"] == wanted), tools[0])
    properties = (tool.get("parameters") or {}).get("properties") or {}
    values = {"string": None, "integer": 0, "number": 0, "boolean": True}
    arguments = {
        name: (f"tok{i}" if (spec or {}).get("type", "string") == "string" else values.get(spec.get("type")))
        for i, (name, spec) in enumerate(properties.items())
    }
    return tool["name"], arguments


def _usage(body: dict[str, Any], request: web.Request, prompt: int, completion: int) -> dict[str, Any]:
    cached = int(request.headers.get("x-fake-cached-tokens", "0"))
    reasoning = int(request.headers.get("x-fake-reasoning-tokens", "0"))
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion + reasoning,
        "total_tokens": prompt + completion + reasoning,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: deque[dict[str, Any]] = deque(maxlen=200)
        self.fail_status = 0
        self.fail_times = 0
        self.prompt_tokens_override: Any = None
        self.override_times = 0

    def _record(self, request: web.Request, body: Any) -> None:
        self.requests.append(
            {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
            }
        )

    def _injected_failure(self, request: web.Request) -> web.Response | None:
        status = int(request.headers.get("x-fake-status", "0"))
        if not status and self.fail_times > 0:
            self.fail_times -= 1
            status = self.fail_status
        if status:
            return web.json_response(
                {
                    "error": {
                        "message": "injected failure",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=status,
            )
        return None

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "test"}],
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        if (failure := self._injected_failure(request)) is not None:
            return failure
        prompt = count_words(body.get("messages"))
        tool = _forced_tool(body)
        words = [] if tool else _words(_output_tokens(body))
        usage = _usage(body, request, prompt, 1 + len(tool[1]) if tool else len(words))
        if self.override_times > 0:
            self.override_times -= 1
            usage["prompt_tokens"] = self.prompt_tokens_override
        created = int(time.time())
        call_id = f"call_fake_{len(self.requests)}"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": " ".join(words)}
            if tool:
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": tool[0], "arguments": json.dumps(tool[1])},
                        }
                    ],
                }
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "finish_reason": "tool_calls" if tool else "stop", "message": message}
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        delay = float(request.headers.get("x-fake-delay", request.query.get("stream_delay", "0")))
        break_after = int(request.headers.get("x-fake-break-after", "-1"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None, with_usage: Any = None) -> bytes:
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                if delta is not None
                else [],
            }
            if include_usage:
                payload["usage"] = with_usage
            return f"data: {json.dumps(payload)}\n\n".encode()

        await response.write(chunk({"role": "assistant", "content": ""}))
        for i, word in enumerate(words):
            if i == break_after:
                request.transport.close()  # type: ignore[union-attr]
                return response
            if delay:
                await asyncio.sleep(delay)
            await response.write(chunk({"content": (" " if i else "") + word}))
        if tool:
            arguments = json.dumps(tool[1])
            half = len(arguments) // 2
            start = {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": tool[0], "arguments": ""},
            }
            await response.write(chunk({"tool_calls": [start]}))
            for piece in (arguments[:half], arguments[half:]):
                await response.write(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        await response.write(chunk({}, finish="tool_calls" if tool else "stop"))
        if include_usage:
            await response.write(chunk(None, with_usage=usage))  # type: ignore[arg-type]
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if (failure := self._injected_failure(request)) is not None:
            return failure
        prompt = count_words(body.get("prompt"))
        words = _words(_output_tokens(body))
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "text": " ".join(words), "finish_reason": "stop", "logprobs": None}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(words),
                    "total_tokens": prompt + len(words),
                },
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if (failure := self._injected_failure(request)) is not None:
            return failure
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        prompt = count_words(items)
        return web.json_response(
            {
                "object": "list",
                "model": body.get("model"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i, _ in enumerate(items)
                ],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        )

    async def responses(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if (failure := self._injected_failure(request)) is not None:
            return failure
        prompt = count_words(body.get("input"))
        words = _words(_output_tokens(body))
        return web.json_response(
            {
                "id": "resp_fake",
                "object": "response",
                "created_at": int(time.time()),
                "status": "completed",
                "model": body.get("model"),
                "output": [
                    {
                        "type": "message",
                        "id": "msg_fake",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": " ".join(words), "annotations": []}],
                    }
                ],
                "usage": {
                    "input_tokens": prompt,
                    "output_tokens": len(words),
                    "total_tokens": prompt + len(words),
                },
            }
        )

    async def speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        return web.Response(body=b"ID3fake-mp3-bytes", content_type="audio/mpeg")

    async def transcription(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: (v if isinstance(v, str) else f"<file {v.filename}>") for k, v in form.items()}
        self._record(request, fields)
        return web.json_response({"text": "fake transcription"})

    async def images(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        return web.json_response({"created": int(time.time()), "data": [{"b64_json": "aW1n"}]})

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.requests))

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.requests.clear()
        return web.json_response({"cleared": True})

    async def set_failures(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.fail_status = int(body.get("status", 500))
        self.fail_times = int(body.get("times", 1))
        return web.json_response({"ok": True})

    async def set_usage(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text())  # json, not orjson: numbers beyond 64 bits kept exact
        self.prompt_tokens_override = body.get("prompt_tokens")
        self.override_times = int(body.get("times", 1))
        return web.json_response({"ok": True})


def build_app() -> web.Application:
    fake = FakeUpstream()
    app = web.Application(client_max_size=64 * 1024**2)
    app.add_routes(
        [
            web.get("/v1/models", fake.models),
            web.post("/v1/chat/completions", fake.chat),
            web.post("/v1/completions", fake.completions),
            web.post("/v1/embeddings", fake.embeddings),
            web.post("/v1/responses", fake.responses),
            web.post("/v1/audio/speech", fake.speech),
            web.post("/v1/audio/transcriptions", fake.transcription),
            web.post("/v1/audio/translations", fake.transcription),
            web.post("/v1/images/generations", fake.images),
            web.get("/_requests", fake.get_requests),
            web.delete("/_requests", fake.clear_requests),
            web.post("/_fail", fake.set_failures),
            web.post("/_usage", fake.set_usage),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
