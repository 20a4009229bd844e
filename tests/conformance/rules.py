"""The columns of the conformance table: every rule a client can rely on, and what each answers.

A rule is a function of a cell (its row and the world of principals) returning the problems it saw
(none: the cell passes). ``NOT_APPLICABLE`` declares, with its reason, every cell that does not apply;
``applies`` consults it, so a cell is never skipped without a reason in the printed table.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson

from tests.conformance.routes import Call, Row

__all__ = ["NOT_APPLICABLE", "RULES", "Cell", "NotApplicableHere", "Rule", "applies", "limited_cells"]

ERROR_KEYS = {"message", "type", "param", "code"}


class NotApplicableHere(Exception):
    """Raised by a rule whose cells cannot run in this environment; the message is the declared reason."""


@dataclass
class Cell:
    row: Row
    world: Any  # tests.conformance.world.World
    make: Callable[..., Call]  # make(token, row, **overrides) -> Call
    deferred: list[dict[str, Any]]  # usage rows to check once, after all requests


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[Cell], list[str]]
    group: str = ""
    # Run once before the rule's first cell (e.g. publish terms of service and wait until they apply).
    before: Callable[[Any], None] | None = None


# -- what an answer must look like ----------------------------------------------------------------------


def answer_problems(answer: httpx.Response) -> list[str]:
    """Every answer: an x-request-id; every error: OpenAI's error body."""
    problems = []
    if not answer.headers.get("x-request-id"):
        problems.append("no x-request-id")
    if answer.status_code >= 400 and _error_of(answer) is None:
        problems.append(f"not an OpenAI error body: {answer.text[:120]!r}")
    return problems


def _error_of(answer: httpx.Response) -> dict[str, Any] | None:
    """OpenAI's ``{"error": {message, type, param, code}}``; for a JSON-RPC answer (MCP, which its
    clients read), the error's ``data`` carries the same ``type`` and ``code``."""
    try:
        body = answer.json()
    except ValueError:
        return None
    if isinstance(body, list) and body:  # a JSON-RPC batch: every request refused alike
        body = body[0]
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    if body.get("jsonrpc") == "2.0" and isinstance(error.get("data"), dict):
        return {"message": error.get("message"), "param": None, **error["data"]}
    if body.get("type") == "error" and {"type", "message"} <= set(error):  # Anthropic's shape
        return {"anthropic": True, "param": None, "code": None, **error}
    return error if ERROR_KEYS <= set(error) else None


# Anthropic's error types by status: rows of Anthropic routes (/v1/messages) answer in Anthropic's shape,
# which has a type and no code.
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
}


def expect_ok(answer: httpx.Response, ratelimit: bool | None = None) -> list[str]:
    problems = answer_problems(answer)
    if not 200 <= answer.status_code < 300:
        problems.append(f"expected 2xx, got {answer.status_code} {answer.text[:160]!r}")
    if ratelimit is not None and ("x-ratelimit-limit-requests" in answer.headers) != ratelimit:
        problems.append("x-ratelimit-* headers " + ("missing" if ratelimit else "where none belong"))
    return problems


def expect_error(
    answer: httpx.Response,
    status: int,
    type_: str,
    code: str | None,
    *,
    retry_after: bool | None = None,
    ratelimit: bool | None = None,
    message: str | None = None,
) -> list[str]:
    problems = answer_problems(answer)
    if answer.status_code != status:
        return [*problems, f"expected {status}, got {answer.status_code} {answer.text[:160]!r}"]
    error = _error_of(answer)
    if error is None:
        return problems
    if error.get("anthropic"):
        if error["type"] != ANTHROPIC_TYPES.get(status):
            problems.append(f"expected Anthropic type {ANTHROPIC_TYPES.get(status)}, got {error['type']}")
    elif error["type"] != type_ or error["code"] != code:
        problems.append(f"expected type={type_} code={code}, got type={error['type']} code={error['code']}")
    if retry_after is not None and ("retry-after" in answer.headers) != retry_after:
        problems.append("Retry-After " + ("missing" if retry_after else "where no retry can succeed"))
    if ratelimit is not None and not any(h.startswith("x-ratelimit-") for h in answer.headers):
        problems.append("x-ratelimit-* headers missing")
    if message is not None and message not in error["message"]:
        problems.append(f"message lacks {message!r}: {error['message']!r}")
    return problems


def expect_served(row: Row, answer: httpx.Response, ratelimit: bool | None = None) -> list[str]:
    """The ordinary answer of the row: 2xx, or for a route refused by design its 404."""
    if row.kind == "refused":
        return expect_error(answer, 404, "invalid_request_error", "unknown_url")
    return expect_ok(answer, ratelimit)


def _limited(row: Row) -> bool:
    """Model calls carry x-ratelimit-* (the default org has limits), and so does an endpoint's model
    list (forwarded to its upstream, it counts as a request); other routes do not."""
    return row.kind in ("model", "multipart") or (row.kind == "list-models" and row.slug)


# -- the rules ----------------------------------------------------------------------------------------


def _ok(cell: Cell) -> list[str]:
    return expect_served(
        cell.row, cell.row.send(cell.make(cell.world.token("ok"), cell.row)), _limited(cell.row)
    )


def _client_request_id(cell: Cell) -> list[str]:
    mine = f"conformance-{abs(hash(cell.row.name)) % 10**8}"
    answer = cell.row.send(cell.make(cell.world.token("ok"), cell.row, headers={"x-request-id": mine}))
    problems = expect_served(cell.row, answer)
    if answer.headers.get("x-request-id") != mine:
        problems.append(f"client's x-request-id not kept: {answer.headers.get('x-request-id')!r}")
    insane = cell.row.send(cell.make(cell.world.token("ok"), cell.row, headers={"x-request-id": "a b<c>"}))
    if insane.headers.get("x-request-id", "a b<c>") == "a b<c>":
        problems.append("an unsafe client x-request-id was echoed")
    return problems


def _raw_auth(header: str | None) -> Callable[[Cell], list[str]]:
    def check(cell: Cell) -> list[str]:
        call = cell.make(None, cell.row)
        if header is not None:
            call.headers["Authorization"] = header
        return _refused_token(_send_raw(cell, call))

    return check


def _send_raw(cell: Cell, call: Call) -> httpx.Response:
    """The row's request without the SDK (which insists on a key): same method, path and body."""
    row = cell.row
    url = call.base + row.path
    if row.kind == "mcp":
        return row.send(call)
    if row.kind == "multipart":
        return call.http.post(
            url, files={"file": ("a.wav", b"RIFF")}, data={"model": call.model}, headers=call.auth()
        )
    if row.body is not None:
        return call.http.post(url, json=row.body(call.model, call.text, call.max_tokens), headers=call.auth())
    method, path = row.serves
    if method == "*":
        method = "POST" if row.kind == "refused" else "GET"
    path = row.path.replace("{file_id}", "file-x").replace("{batch_id}", "batch_x")
    return call.http.request(method, call.base + path, headers=call.auth())


def _refused_token(answer: httpx.Response) -> list[str]:
    return expect_error(answer, 401, "invalid_request_error", "invalid_api_key")


def _token_refused(purpose: str) -> Callable[[Cell], list[str]]:
    def check(cell: Cell) -> list[str]:
        if purpose == "expired":
            time.sleep(max(0.0, cell.world.expires_at - time.time() + 0.1))
        return _refused_token(cell.row.send(cell.make(cell.world.token(purpose), cell.row)))

    return check


def _oversized(cell: Cell) -> list[str]:
    call = cell.make(None, cell.row)
    call.headers["Authorization"] = "Bearer aq-" + "x" * 10_000
    return expect_error(
        _send_raw(cell, call), 431, "invalid_request_error", "request_header_fields_too_large"
    )


def _regenerated(cell: Cell) -> list[str]:
    problems = _refused_token(cell.row.send(cell.make(cell.world.token("regenerated"), cell.row)))
    fresh = cell.row.send(cell.make(cell.world.token("regenerated-new"), cell.row))
    return problems + [f"new value: {p}" for p in expect_served(cell.row, fresh)]


def _service_account(cell: Cell) -> list[str]:
    return expect_served(cell.row, cell.row.send(cell.make(cell.world.token("service_account"), cell.row)))


def _jupyterhub(cell: Cell) -> list[str]:
    """A hub user's token where an API key goes: the bridge maps it to a directory user of the org whose
    SSO group the hub user is in, and every rule of an API key applies."""
    if cell.world.hub_token is None:
        raise NotApplicableHere("JupyterHub is not installed here (make test-deps installs it)")
    deadline = time.monotonic() + 20  # the first use signs the hub user in (auth, then the directory)
    while True:
        answer = cell.row.send(cell.make(cell.world.hub_token, cell.row))
        if answer.status_code != 401 or time.monotonic() > deadline:
            return expect_served(cell.row, answer)
        time.sleep(0.2)


def _model_refused(model: str, purpose: str, status: int, code: str) -> Callable[[Cell], list[str]]:
    def check(cell: Cell) -> list[str]:
        call = cell.make(cell.world.token(purpose), cell.row, model=model)
        answer = cell.row.send(call)
        if cell.row.kind == "retrieve-model":  # a model the token may not use does not exist for it
            return expect_error(answer, 404, "invalid_request_error", "model_not_found")
        if cell.row.kind == "list-models":  # the listing leaves the model out
            problems = expect_ok(answer)
            if model in {m["id"] for m in answer.json().get("data", [])}:
                problems.append(f"{model} is listed")
            return problems
        return expect_error(answer, status, "invalid_request_error", code)

    return check


def _limit(rule: str, dim: str) -> Callable[[Cell], list[str]]:
    """One request within the limit, the next over it: 429 with the dimension's type and Retry-After."""

    def check(cell: Cell) -> list[str]:
        token = cell.world.token(rule, cell.row.name)
        words, cap = (6, 6) if dim != "rpm" else (3, 4)
        if dim == "otpm":
            words = 1
        first = cell.row.send(cell.make(token, cell.row, words=words, max_tokens=cap))
        problems = [f"first request: {p}" for p in expect_ok(first)]
        if cell.row.kind != "mcp" and "x-ratelimit-limit-requests" not in first.headers and dim == "rpm":
            problems.append("first request: x-ratelimit-* missing")
        second = cell.row.send(cell.make(token, cell.row, words=words, max_tokens=cap))
        type_ = "requests" if dim == "rpm" else "tokens"
        return problems + expect_error(
            second, 429, type_, "rate_limit_exceeded", retry_after=True, ratelimit=True
        )

    return check


def _too_large(cell: Cell) -> list[str]:
    answer = cell.row.send(cell.make(cell.world.token("too_large", cell.row.name), cell.row, words=10))
    problems = expect_error(
        answer, 429, "tokens", "rate_limit_exceeded", retry_after=False, message="Request too large"
    )
    if answer.status_code == 429:
        if answer.headers.get("x-should-retry") != "false":
            problems.append("x-should-retry: false missing (the SDK would retry in vain)")
        message = answer.json()["error"]["message"]
        if "Limit 5" not in message or "Requested 10" not in message:
            problems.append(f"limit and request size not told: {message!r}")
    return problems


def _budget(level: str) -> Callable[[Cell], list[str]]:
    return lambda cell: _budget_spent(cell, level)


# Rows that cost nothing: a used-up budget does not stop them (listing and counting, files, batches'
# management; a batch's lines are refused when they run).
FREE_ROWS = (
    "GET /v1/models",
    "GET /v1/models/{model}",
    "GET /{slug}/v1/models",
    "POST */v1/messages/count_tokens",
    "* /v1/files*",
    "* /v1/batches*",
)


def _budget_spent(cell: Cell, level: str) -> list[str]:
    answer = cell.row.send(cell.make(cell.world.token(f"budget-{level}"), cell.row))
    if any(fnmatch.fnmatchcase(cell.row.name, free) for free in FREE_ROWS):
        return expect_served(cell.row, answer)
    problems = expect_error(answer, 429, "insufficient_quota", "insufficient_quota", retry_after=False)
    if answer.status_code == 429 and answer.headers.get("x-should-retry") != "false":
        problems.append("x-should-retry: false missing (the SDK would retry in vain)")
    return problems


def _terms(cell: Cell) -> list[str]:
    answer = cell.row.send(cell.make(cell.world.token("tos"), cell.row))
    return expect_error(answer, 403, "invalid_request_error", "terms_not_accepted")


def _body_too_large(cell: Cell) -> list[str]:
    call = cell.make(cell.world.token("body"), cell.row)
    big = b'{"model": "fake-model", "input": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    headers = {**call.auth(), "Content-Type": "application/json"}
    if cell.row.kind == "multipart":
        answer = call.http.post(
            call.base + cell.row.path,
            files={"file": ("a.wav", big)},
            data={"model": "fake-model"},
            headers=call.auth(),
        )
    else:
        answer = call.http.post(call.base + cell.row.path, content=big, headers=headers)
    return expect_error(answer, 413, "invalid_request_error", "request_too_large")


def _content_type(cell: Cell) -> list[str]:
    call = cell.make(cell.world.token("body"), cell.row)
    url = call.base + cell.row.path
    if cell.row.kind == "multipart":  # JSON where a file upload belongs
        answer = call.http.post(url, json={"model": "fake-model"}, headers=call.auth())
    else:  # a JSON object declared as text: refused like any other content type but JSON
        assert cell.row.body is not None
        payload = cell.row.body(call.model, call.text, call.max_tokens)
        answer = call.http.post(
            url, content=orjson.dumps(payload), headers={**call.auth(), "Content-Type": "text/plain"}
        )
    return expect_error(answer, 400, "invalid_request_error", None)


def _malformed(cell: Cell) -> list[str]:
    call = cell.make(cell.world.token("body"), cell.row)
    url = call.base + cell.row.path
    if cell.row.kind == "multipart":
        answer = call.http.post(
            url,
            content=b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nfake',
            headers={**call.auth(), "Content-Type": "multipart/form-data; boundary=xyz"},
        )
    else:
        answer = call.http.post(
            url,
            content=b'{"model": "fake-model", "messages": [',
            headers={**call.auth(), "Content-Type": "application/json"},
        )
    return expect_error(answer, 400, "invalid_request_error", None)


def _usage(cell: Cell) -> list[str]:
    """The request now; its row is checked once for all cells (``deferred``), after accounting ingests."""
    token = cell.world.token("usage", cell.row.name)
    request_id = f"usage-{len(cell.deferred)}-{int(time.time())}"
    answer = cell.row.send(
        cell.make(token, cell.row, headers={"x-request-id": request_id}, words=3, max_tokens=4)
    )
    problems = expect_ok(answer)
    if not problems:
        cell.deferred.append(
            {
                "row": cell.row,
                "token_id": cell.world.token_ids[token],
                "request_id": request_id,
                "input": cell.row.usage_input(3) if cell.row.usage_input else 0,
                "output": cell.row.usage_output(4) if cell.row.usage_output else 0,
            }
        )
    return problems


def _stream(cell: Cell) -> list[str]:
    """A streamed chat through the SDK: server-sent events to the end, the answer's headers, and a usage
    row as exact as a whole answer's (checked with the others, after all requests)."""
    token = cell.world.token("stream", cell.row.name)
    request_id = f"stream-{len(cell.deferred)}-{int(time.time())}"
    call = cell.make(token, cell.row, headers={"x-request-id": request_id})
    try:
        raw = call.sdk.chat.completions.with_raw_response.create(
            model=call.model,
            messages=[{"role": "user", "content": call.text}],
            max_tokens=call.max_tokens,
            stream=True,
        )
    except openai.APIStatusError as exc:
        return expect_ok(exc.response)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    problems = expect_ok(raw.http_response, ratelimit=True)
    if not raw.http_response.headers.get("content-type", "").startswith("text/event-stream"):
        problems.append(f"not an event stream: {raw.http_response.headers.get('content-type')}")
    if text != "tok0 tok1 tok2 tok3":
        problems.append(f"streamed text {text!r}")
    if not problems:
        cell.deferred.append(
            {
                "row": cell.row,
                "token_id": cell.world.token_ids[token],
                "request_id": request_id,
                "input": call.words,
                "output": call.max_tokens,
                "rule": "stream",
            }
        )
    return problems


RULES: list[Rule] = [
    Rule("ok", _ok, "answer"),
    Rule("x-request-id", _client_request_id, "answer"),
    Rule("auth: missing", _raw_auth(None), "authentication"),
    Rule("auth: malformed", _raw_auth("Token abc"), "authentication"),
    Rule("auth: oversized", _oversized, "authentication"),
    Rule("auth: unknown", _raw_auth("Bearer aq-0000000000000000000000000000"), "authentication"),
    Rule("auth: expired", _token_refused("expired"), "authentication"),
    Rule("auth: revoked", _token_refused("revoked"), "authentication"),
    Rule("auth: regenerated", _regenerated, "authentication"),
    Rule("auth: service account", _service_account, "authentication"),
    Rule("auth: jupyterhub", _jupyterhub, "authentication"),
    Rule("model: unknown", _model_refused("no-such-model", "model", 404, "model_not_found"), "model access"),
    Rule(
        "model: other endpoint",
        _model_refused("other-model", "model", 404, "model_not_found"),
        "model access",
    ),
    Rule(
        "model: excluded org",
        _model_refused("excluded-at-org", "model", 403, "model_not_allowed"),
        "model access",
    ),
    Rule(
        "model: excluded team",
        _model_refused("excluded-at-team", "excl-team", 403, "model_not_allowed"),
        "model access",
    ),
    Rule(
        "model: excluded user",
        _model_refused("excluded-at-user", "excl-user", 403, "model_not_allowed"),
        "model access",
    ),
    *[
        Rule(f"{dim}_{level}", _limit(f"{dim}_{level}", dim), "limits")
        for dim in ("rpm", "itpm", "otpm")
        for level in ("token", "user", "team", "org", "model")
    ],
    Rule("too_large", _too_large, "limits"),
    *[
        Rule(
            f"budget: {level}",
            _budget(level),
            "budgets",
            before=lambda world, lv=level: world.exhaust_budget(lv),
        )
        for level in ("user", "team", "org")
    ],
    Rule("body: too large", _body_too_large, "body"),
    Rule("body: content type", _content_type, "body"),
    Rule("body: malformed", _malformed, "body"),
    Rule("usage row", _usage, "usage"),
    Rule("stream", _stream, "usage"),
    # Last: publishing terms of service applies to every user who has not accepted them.
    Rule("terms of service", _terms, "terms", before=lambda world: world.publish_terms()),
]

_NO_MODEL = "the request names no model"
_NOT_MODEL_CALL = "not a model call: no per-minute model limits apply (storage and batch management)"
# (rule pattern, row pattern) -> why the cell does not apply. Patterns are fnmatch patterns on the names.
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("model: other endpoint", "* /v1/*"): "no endpoint in the path: every endpoint's models are served",
    ("model: other endpoint", "* /mcp/*"): _NO_MODEL,
    ("model: *", "GET /{slug}/v1/models"): "the endpoint's own model list, as its upstream answers it",
    ("model: unknown", "GET /v1/models"): _NO_MODEL,
    ("model: *", "* /v1/files*"): _NO_MODEL,
    ("model: *", "* /v1/batches*"): "batch lines name their models; the worker checks each line when it runs",
    ("model: *", "* /mcp/*"): _NO_MODEL,
    ("model: *", "POST /{slug}/v1/files"): "refused under an endpoint: 404 (see ok)",
    ("*pm_*", "POST /{slug}/v1/files"): "refused under an endpoint: 404 (see ok)",
    ("too_large", "POST /{slug}/v1/files"): "refused under an endpoint: 404 (see ok)",
    ("body: *", "POST /{slug}/v1/files"): "refused under an endpoint: 404 (see ok)",
    ("usage row", "POST /{slug}/v1/files"): "refused under an endpoint: 404 (see ok)",
    ("budget: *", "POST /{slug}/v1/files"): "refused under an endpoint: 404 (see ok)",
    ("budget: *", "* /mcp/*"): "a tool call spends no model tokens: a used-up budget does not stop it",
    ("*pm_*", "GET /v1/models"): "the gateway's own model list spends nothing and is not counted",
    ("*pm_*", "GET /v1/models/{model}"): "answered by the gateway from its snapshot: spends nothing",
    ("too_large", "GET /v1/models/{model}"): "answered by the gateway from its snapshot: spends nothing",
    ("usage row", "GET /v1/models/{model}"): "answered by the gateway itself: no usage event",
    ("too_large", "GET /v1/models"): "the gateway's own model list spends nothing and is not counted",
    ("itpm_*", "GET /{slug}/v1/models"): "a model list sends no input tokens",
    ("otpm_*", "GET /{slug}/v1/models"): "a model list caps no output tokens",
    ("too_large", "GET /{slug}/v1/models"): "a model list sends no input tokens",
    ("rpm_model", "GET /{slug}/v1/models"): "a model list names no model: per-model limits do not apply",
    ("*pm_*", "* /v1/files*"): _NOT_MODEL_CALL,
    ("*pm_*", "* /v1/batches*"): _NOT_MODEL_CALL,
    ("too_large", "* /v1/files*"): _NOT_MODEL_CALL,
    ("too_large", "* /v1/batches*"): _NOT_MODEL_CALL,
    ("itpm_*", "* /mcp/*"): "a tool call spends no model tokens: only requests per minute apply",
    ("otpm_*", "* /mcp/*"): "a tool call spends no model tokens: only requests per minute apply",
    ("too_large", "* /mcp/*"): "a tool call spends no model tokens",
    ("rpm_model", "* /mcp/*"): "per-model limits apply to model calls; tool calls count on the token's limit",
    ("itpm_*", "* */audio/transcriptions"): "the input is audio: its tokens are known only from the answer",
    ("itpm_*", "* */audio/translations"): "the input is audio: its tokens are known only from the answer",
    ("too_large", "* */audio/trans*"): "the input is audio: its tokens are known only from the answer",
    ("otpm_*", "* */embeddings"): "embeddings produce no output tokens",
    ("otpm_*", "* */audio/*"): "no output-token cap in the request (audio)",
    ("otpm_*", "* */images/*"): "no output-token cap in the request (images)",
    ("body: *", "GET *"): "no request body",
    ("body: *", "DELETE *"): "no request body",
    ("body: *", "* /v1/files*"): "multipart upload with its own size limit (AQUEDUCT_PROXY_FILES_*)",
    ("body: *", "* /v1/batches*"): "covered by the batch API's own validation (services/proxy/tests)",
    ("body: *", "* /mcp/*"): "JSON-RPC bodies are the MCP server's to judge; relayed as they are",
    ("stream", "GET *"): "not a streaming API",
    ("stream", "DELETE *"): "not a streaming API",
    ("stream", "POST */v1/completions"): "the test upstream answers legacy completions whole",
    ("stream", "POST */v1/responses"): "the test upstream answers the Responses API whole",
    ("stream", "POST */embeddings"): "not a streaming API",
    ("stream", "POST */audio/*"): "not streamed here (the test upstream answers whole)",
    ("stream", "POST */images/*"): "not streamed here (the test upstream answers whole)",
    ("stream", "* /v1/files*"): "not a streaming API",
    ("stream", "* /v1/batches*"): "not a streaming API",
    ("stream", "* /mcp/*"): "the MCP server answers JSON; event streams are relayed as they come "
    "(services/proxy/tests/test_mcp_gateway.py)",
    ("stream", "POST /{slug}/v1/files"): "refused under an endpoint: 404 (see ok)",
    ("stream", "POST */v1/messages*"): "the rule streams chat completions; Anthropic's event stream is "
    "checked by services/proxy/tests/test_proxy_messages.py and tests/e2e/test_coding_agents.py",
    (
        "itpm_*",
        "POST */v1/messages/count_tokens",
    ): "counting spends no tokens: only requests per minute apply",
    ("otpm_*", "POST */v1/messages/count_tokens"): "counting caps no output tokens",
    ("too_large", "POST */v1/messages/count_tokens"): "counting spends no tokens",
    ("usage row", "GET /v1/models"): "answered by the gateway itself: no usage event",
    ("usage row", "* /v1/files*"): "no model call, no usage event",
    ("usage row", "* /v1/batches*"): "recorded per line by the batch worker (kind batch): "
    "tests/e2e/test_batches_in_the_product.py",
}


def applies(rule: Rule, row: Row) -> str | None:
    """None when the cell applies, else the declared reason it does not."""
    for (rule_pattern, row_pattern), reason in NOT_APPLICABLE.items():
        if fnmatch.fnmatchcase(rule.name, rule_pattern) and fnmatch.fnmatchcase(row.name, row_pattern):
            return reason
    return None


def limited_cells(rows: list[Row]) -> list[tuple[str, str]]:
    """The (rule, row) cells that need a fresh token of their own."""
    return [
        (rule.name, row.name)
        for rule in RULES
        if rule.group == "limits"
        for row in rows
        if applies(rule, row) is None
    ]
