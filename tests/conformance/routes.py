"""The rows of the conformance table: every route a client can call, and how the suite calls it.

A row names the proxy route it exercises (``serves``: method and the aiohttp route's canonical path);
``test_every_proxy_route_has_a_row`` fails when the proxy gains a route no row serves. Requests go
through the official ``openai`` SDK (``with_raw_response``, so status and headers stay visible); raw
httpx only where the SDK cannot say it (MCP, broken bodies, missing or hostile credentials).

Adding a row, e.g. for Anthropic's ``/v1/messages`` (raw JSON; errors in Anthropic's shape are read by
``rules.ANTHROPIC_TYPES``), to ``ROUTES``::

    json_row("POST /v1/messages", "/v1/messages", lambda m, text, n: {"model": m, "max_tokens": n,
             "messages": [{"role": "user", "content": text}]}, output=True),
    json_row("POST /v1/messages/count_tokens", "/v1/messages/count_tokens", lambda m, text, n: {
             "model": m, "messages": [{"role": "user", "content": text}]}),

and, in ``rules.NOT_APPLICABLE``, the cells that do not apply with their reasons (e.g. for count_tokens,
which calls no model: ``("usage row", "POST /v1/messages/count_tokens"): "..."``). The test upstream must
answer the route (``tests/support/upstream.py``), and the table then shows what the route does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

__all__ = ["ROUTES", "Call", "Row", "json_row"]

# A request of the suite: the client (SDK bound to the row's base URL and a token), raw httpx, the model,
# the text sent (``words`` words "hello") and the output cap.
Body = Callable[[str, str, int], dict[str, Any]]


@dataclass
class Call:
    sdk: openai.OpenAI
    http: httpx.Client
    base: str  # the proxy's URL
    token: str | None
    model: str = "fake-model"
    words: int = 3
    max_tokens: int = 4
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(["hello"] * self.words)

    def auth(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def _raw(answer: Callable[[], Any]) -> httpx.Response:
    """The HTTP answer of an SDK call, success or error."""
    try:
        result = answer()
    except openai.APIStatusError as exc:
        return exc.response
    return result.http_response


@dataclass(frozen=True)
class Row:
    name: str  # the column label: "POST /v1/chat/completions", "POST /{slug}/v1/chat/completions"
    serves: tuple[str, str]  # (method, canonical path) of the proxy route it exercises
    kind: str  # list-models | retrieve-model | model | multipart | files | batches | mcp | refused
    path: str  # the URL path the suite calls (slug rows: under /fake)
    send: Callable[[Call], httpx.Response]  # the ordinary request, through the SDK
    body: Body | None = None  # JSON rows: the body, for raw requests (broken bodies, content types)
    input_tokens: bool = False  # the gateway counts input tokens before forwarding
    output: bool = False  # the request caps output tokens (max_tokens & co.)
    usage_input: Callable[[int], int] | None = None  # expected input tokens of the usage row
    usage_output: Callable[[int], int] | None = None

    @property
    def slug(self) -> bool:
        return self.path.startswith("/fake/")

    @property
    def base_path(self) -> str:
        return "/fake/v1" if self.slug else "/v1"


def _sdk_send(name: str) -> Callable[[Call], httpx.Response]:
    def send(c: Call) -> httpx.Response:
        s, m, t, n = c.sdk, c.model, c.text, c.max_tokens
        calls: dict[str, Callable[[], Any]] = {
            "chat": lambda: s.chat.completions.with_raw_response.create(
                model=m, messages=[{"role": "user", "content": t}], max_tokens=n
            ),
            "completions": lambda: s.completions.with_raw_response.create(model=m, prompt=t, max_tokens=n),
            "embeddings": lambda: s.embeddings.with_raw_response.create(model=m, input=t),
            "responses": lambda: s.responses.with_raw_response.create(model=m, input=t, max_output_tokens=n),
            "speech": lambda: s.audio.speech.with_raw_response.create(model=m, voice="alloy", input=t),
            "images": lambda: s.images.with_raw_response.generate(model=m, prompt=t),
            "transcriptions": lambda: s.audio.transcriptions.with_raw_response.create(
                model=m, file=("a.wav", b"RIFF0000WAVEfake", "audio/wav")
            ),
            "translations": lambda: s.audio.translations.with_raw_response.create(
                model=m, file=("a.wav", b"RIFF0000WAVEfake", "audio/wav")
            ),
            "models": lambda: s.models.with_raw_response.list(),
            "retrieve": lambda: s.models.with_raw_response.retrieve(m),
        }
        return _raw(calls[name])

    return send


_BODIES: dict[str, Body] = {
    "chat": lambda m, t, n: {"model": m, "messages": [{"role": "user", "content": t}], "max_tokens": n},
    "completions": lambda m, t, n: {"model": m, "prompt": t, "max_tokens": n},
    "embeddings": lambda m, t, n: {"model": m, "input": t},
    "responses": lambda m, t, n: {"model": m, "input": t, "max_output_tokens": n},
    "speech": lambda m, t, n: {"model": m, "voice": "alloy", "input": t},
    "images": lambda m, t, n: {"model": m, "prompt": t},
}


# Paths under an endpoint with a route of their own (translated APIs), not the catch-all forward.
_SLUG_ROUTES = frozenset({"responses", "messages", "messages/count_tokens"})


def json_row(
    name: str,
    path: str,
    body: Body,
    *,
    send: Callable[[Call], httpx.Response] | None = None,
    output: bool = False,
    counted_output: bool | None = None,
) -> Row:
    """A JSON model route; without ``send``, raw JSON through httpx. ``counted_output``: the test
    upstream reports the output tokens (else the row expects none)."""
    counted = output if counted_output is None else counted_output

    def raw_send(c: Call) -> httpx.Response:
        return c.http.post(c.base + path, json=body(c.model, c.text, c.max_tokens), headers=c.auth())

    slug = path.startswith("/fake/")
    tail = path.removeprefix("/fake/v1/")
    return Row(
        name,
        (("POST", "/{slug}/v1/" + tail) if tail in _SLUG_ROUTES else ("*", "/{slug}/v1/{tail}"))
        if slug
        else ("POST", path),
        "model",
        path,
        send or raw_send,
        body,
        input_tokens=True,
        output=output,
        usage_input=lambda words: words,
        usage_output=(lambda n: n) if counted else (lambda n: 0),
    )


def _model_rows(prefix: str) -> list[Row]:
    slug = prefix != "/v1"
    rows = [
        json_row(
            f"POST {p}", p, _BODIES[k], send=_sdk_send(k), output=k in ("chat", "completions", "responses")
        )
        for k, p in (
            ("chat", f"{prefix}/chat/completions"),
            ("completions", f"{prefix}/completions"),
            ("embeddings", f"{prefix}/embeddings"),
            ("responses", f"{prefix}/responses"),
            ("speech", f"{prefix}/audio/speech"),
            ("images", f"{prefix}/images/generations"),
        )
    ]
    for k in ("transcriptions", "translations"):
        path = f"{prefix}/audio/{k}"
        rows.append(
            Row(
                f"POST {path}",
                ("*", "/{slug}/v1/{tail}") if slug else ("POST", path),
                "multipart",
                path,
                _sdk_send(k),
                usage_input=lambda words: 0,
                usage_output=lambda n: 0,
            )
        )
    rows.insert(
        0,
        Row(
            f"GET {prefix}/models",
            ("*", "/{slug}/v1/{tail}") if slug else ("GET", "/v1/models"),
            "list-models",
            f"{prefix}/models",
            _sdk_send("models"),
        ),
    )
    if not slug:  # under an endpoint, /models/{id} is forwarded as the catch-all (its upstream's answer)
        rows.insert(
            1,
            Row(
                f"GET {prefix}/models/{{model}}",
                ("GET", "/v1/models/{model}"),
                "retrieve-model",
                f"{prefix}/models/fake-model",
                _sdk_send("retrieve"),
            ),
        )
    return [_slug_name(r) if slug else r for r in rows]


def _anthropic_rows(prefix: str) -> list[Row]:
    """Anthropic's Messages API (raw JSON; its errors in Anthropic's shape): translated to the test
    upstream's chat completions. ``count_tokens`` calls no model: its usage row counts no tokens."""
    messages = json_row(
        f"POST {prefix}/messages",
        f"{prefix}/messages",
        lambda m, t, n: {"model": m, "max_tokens": n, "messages": [{"role": "user", "content": t}]},
        output=True,
    )
    count = json_row(
        f"POST {prefix}/messages/count_tokens",
        f"{prefix}/messages/count_tokens",
        lambda m, t, n: {"model": m, "messages": [{"role": "user", "content": t}]},
    )
    count = Row(**{**count.__dict__, "input_tokens": False, "usage_input": lambda words: 0})
    rows = [messages, count]
    return [_slug_name(r) for r in rows] if prefix != "/v1" else rows


def _slug_name(row: Row) -> Row:
    return Row(**{**row.__dict__, "name": row.name.replace("/fake/", "/{slug}/")})


# -- files and batches ---------------------------------------------------------------------------------

_BATCH_LINE = (
    b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}}\n'
)


def _upload(c: Call) -> httpx.Response:
    return _raw(
        lambda: c.sdk.files.with_raw_response.create(
            file=("b.jsonl", io.BytesIO(_BATCH_LINE)), purpose="batch"
        )
    )


def _file_id(c: Call) -> str:
    """A file of the caller's, or a made-up id when the caller cannot upload (refused credentials)."""
    answer = _upload(c)
    return answer.json()["id"] if answer.status_code == 200 else "file-conformance"


def _batch_id(c: Call) -> str:
    file_id = _file_id(c)
    answer = _raw(
        lambda: c.sdk.batches.with_raw_response.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    )
    return answer.json()["id"] if answer.status_code == 200 else "batch_conformance"


def _files_rows() -> list[Row]:
    def row(name: str, serves: tuple[str, str], kind: str, send: Callable[[Call], httpx.Response]) -> Row:
        return Row(name, serves, kind, serves[1], send)

    return [
        row("POST /v1/files", ("POST", "/v1/files"), "files", _upload),
        row(
            "GET /v1/files", ("GET", "/v1/files"), "files", lambda c: _raw(c.sdk.files.with_raw_response.list)
        ),
        row(
            "GET /v1/files/{id}",
            ("GET", "/v1/files/{file_id}"),
            "files",
            lambda c: _raw(lambda: c.sdk.files.with_raw_response.retrieve(_file_id(c))),
        ),
        row(
            "GET /v1/files/{id}/content",
            ("GET", "/v1/files/{file_id}/content"),
            "files",
            lambda c: _raw(lambda: c.sdk.files.with_raw_response.content(_file_id(c))),
        ),
        row(
            "DELETE /v1/files/{id}",
            ("DELETE", "/v1/files/{file_id}"),
            "files",
            lambda c: _raw(lambda: c.sdk.files.with_raw_response.delete(_file_id(c))),
        ),
        row(
            "POST /v1/batches",
            ("POST", "/v1/batches"),
            "batches",
            lambda c: _raw(
                lambda: c.sdk.batches.with_raw_response.create(
                    input_file_id=_file_id(c), endpoint="/v1/chat/completions", completion_window="24h"
                )
            ),
        ),
        row(
            "GET /v1/batches",
            ("GET", "/v1/batches"),
            "batches",
            lambda c: _raw(c.sdk.batches.with_raw_response.list),
        ),
        row(
            "GET /v1/batches/{id}",
            ("GET", "/v1/batches/{batch_id}"),
            "batches",
            lambda c: _raw(lambda: c.sdk.batches.with_raw_response.retrieve(_batch_id(c))),
        ),
        row(
            "POST /v1/batches/{id}/cancel",
            ("POST", "/v1/batches/{batch_id}/cancel"),
            "batches",
            lambda c: _raw(lambda: c.sdk.batches.with_raw_response.cancel(_batch_id(c))),
        ),
        # The provider's own files API under an endpoint would act with the shared provider key.
        Row("POST /{slug}/v1/files", ("*", "/{slug}/v1/{tail}"), "refused", "/fake/v1/files", _upload),
    ]


# -- MCP -----------------------------------------------------------------------------------------------

_MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _mcp(c: Call) -> httpx.Response:
    """initialize, initialized, then one ``tools/call``; the first answer that is not a success, else
    the tool call's."""
    url = f"{c.base}/mcp/tools"
    headers = {**_MCP_HEADERS, **c.auth()}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "conformance", "version": "1"},
        },
    }
    answer = c.http.post(url, json=init, headers=headers)
    if answer.status_code != 200:
        return answer
    if session := answer.headers.get("mcp-session-id"):
        headers["mcp-session-id"] = session
    if "mcp-protocol-version" not in headers:
        headers["mcp-protocol-version"] = "2025-06-18"
    note = c.http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    if note.status_code >= 300:
        return note
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 2, "b": 3}},
    }
    return c.http.post(url, json=call, headers=headers)


MCP_ROW = Row(
    "POST /mcp/{name}",
    ("*", "/mcp/{name}"),
    "mcp",
    "/mcp/tools",
    _mcp,
    usage_input=lambda w: 0,
    usage_output=lambda n: 0,
)

# The table's rows, in the order they are printed.
ROUTES: list[Row] = [
    *_model_rows("/v1"),
    *_anthropic_rows("/v1"),
    *_files_rows(),
    MCP_ROW,
    *_model_rows("/fake/v1"),
    *_anthropic_rows("/fake/v1"),
]

# Proxy routes that are not part of the client API (no credentials, no rules): each with its reason.
OPERATIONAL: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe, no credentials",
    ("GET", "/readyz"): "readiness probe, no credentials",
    ("GET", "/metrics"): "Prometheus scrape, no credentials",
    ("GET", "/openapi.json"): "the API description, public",
}
