"""The lean front end (``entrypoints.front``) on the wire: it serves the hot routes as aiohttp's routes do,
and hands a connection to aiohttp at a request boundary for anything else."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aqueduct_proxy.entrypoints.front import FrontEnd
from conftest import (
    RunningProxy,
    common_settings,
    proxy_settings,
    start_in_process,
    stop_in_process,
    usage_events,
    wait_token,
)

pytestmark = [pytest.mark.nats, pytest.mark.valkey]

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "one two"}], "max_tokens": 3}


def post(path: str, token: str, body: Any = CHAT, *, extra: str = "", version: str = "1.1") -> bytes:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return (
        f"POST {path} HTTP/{version}\r\nHost: proxy\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
    ).encode() + data


def get(path: str, token: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {token}\r\n{extra}\r\n".encode()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer: status, headers (lower-case names), body (chunked or Content-Length)."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    status_line, *lines = head.split("\r\n")[:-2]
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split(" ")[1]), headers, body


async def served_by(running: RunningProxy, writer: asyncio.StreamWriter) -> str:
    """Which protocol holds this client connection on the server: FrontEnd or aiohttp's handler."""
    here = writer.get_extra_info("sockname")
    for _ in range(50):
        for protocol, transport in running.runner.server._connections.items():  # type: ignore[union-attr]
            if transport.get_extra_info("peername") == here:
                return "front" if isinstance(protocol, FrontEnd) else "aiohttp"
        await asyncio.sleep(0.01)
    return "none"


@pytest.fixture
async def token(proxy: RunningProxy, snapshot: Any) -> str:
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    return value


async def connect(running: RunningProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = running.base_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def test_a_streamed_chat_is_served_by_the_front_end_with_the_request_id_and_keep_alive(proxy, token):
    reader, writer = await connect(proxy)
    body = {**CHAT, "stream": True}
    writer.write(post("/v1/chat/completions", token, body, extra="x-request-id: my-id-1\r\n"))
    status, headers, data = await answer(reader)
    assert await served_by(proxy, writer) == "front"
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["x-request-id"] == "my-id-1" and headers["cache-control"] == "no-cache"
    assert data.count(b"data: ") >= 4 and data.endswith(b"data: [DONE]\n\n")
    # the same connection serves the next request (keep-alive), a plain one with a new request id
    writer.write(post("/v1/chat/completions", token, extra="x-request-id: not sane!\r\n"))
    status, headers, data = await answer(reader)
    assert status == 200 and json.loads(data)["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    assert headers["x-request-id"].startswith("req_") and "connection" not in headers
    assert await served_by(proxy, writer) == "front"
    writer.close()


async def test_errors_are_openais_with_a_request_id(proxy, token):
    reader, writer = await connect(proxy)
    writer.write(post("/v1/chat/completions", "aq-not-a-token"))
    status, headers, data = await answer(reader)
    assert status == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"
    assert headers["x-request-id"].startswith("req_")
    writer.write(post("/v1/chat/completions", token, b"[1]"))
    status, _, data = await answer(reader)
    assert status == 400 and "JSON object" in json.loads(data)["error"]["message"]
    writer.write(post("/v1/embeddings", token, {"model": "no-such", "input": "x"}))
    status, _, data = await answer(reader)
    assert status == 404 and json.loads(data)["error"]["code"] == "model_not_found"
    assert await served_by(proxy, writer) == "front"
    writer.close()


async def test_pipelined_requests_are_answered_in_order_and_aiohttp_takes_over_at_a_boundary(proxy, token):
    reader, writer = await connect(proxy)
    writer.write(
        post("/v1/chat/completions", token, extra="x-request-id: one\r\n")
        + post(
            "/v1/completions",
            token,
            {"model": "gpt-test", "prompt": "a b", "max_tokens": 2},
            extra="x-request-id: two\r\n",
        )
        + get("/v1/models", token, "x-request-id: three\r\n")
        + post("/v1/chat/completions", token, extra="x-request-id: four\r\n")
    )
    answers = [await answer(reader) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    assert [a[1]["x-request-id"] for a in answers] == ["one", "two", "three", "four"]
    assert json.loads(answers[2][2])["object"] == "list"
    assert await served_by(proxy, writer) == "aiohttp"  # from the GET on
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(lambda t: post("/v1/chat/completions", t, version="1.0"), id="http-1.0"),
        pytest.param(
            lambda t: post("/v1/chat/completions", t, extra="Expect: 100-continue\r\n"), id="expect"
        ),
        pytest.param(lambda t: post("/v1/chat/completions?x=1", t), id="query"),
        pytest.param(
            lambda t: post("/v1/chat/completions", t).replace(
                b"application/json", b"application/json; charset=UTF-8"
            ),
            id="content-type-variant",
        ),
    ],
)
async def test_unusual_requests_are_aiohttps_and_still_served(proxy, token, request_bytes):
    reader, writer = await connect(proxy)
    writer.write(request_bytes(token))
    if b"Expect" in request_bytes(token):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
    status, headers, data = await answer(reader)
    assert status == 200 and json.loads(data)["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    assert headers["x-request-id"].startswith("req_")
    writer.close()


async def test_a_chunked_request_body_is_aiohttps(proxy, token):
    reader, writer = await connect(proxy)
    data = json.dumps(CHAT).encode()
    writer.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
    )
    status, _, body = await answer(reader)
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 3
    assert await served_by(proxy, writer) == "aiohttp"
    writer.close()


async def test_a_body_sent_in_pieces_is_served(proxy, token):
    reader, writer = await connect(proxy)
    whole = post(
        "/v1/chat/completions", token, {**CHAT, "messages": [{"role": "user", "content": "w " * 5000}]}
    )
    for i in range(0, len(whole), 1000):
        writer.write(whole[i : i + 1000])
        await writer.drain()
        await asyncio.sleep(0.001)
    status, _, body = await answer(reader)
    assert status == 200 and json.loads(body)["usage"]["prompt_tokens"] == 5000
    assert await served_by(proxy, writer) == "front"
    writer.close()


async def test_connection_close_is_honoured(proxy, token):
    reader, writer = await connect(proxy)
    writer.write(post("/v1/chat/completions", token, {**CHAT, "stream": True}, extra="Connection: close\r\n"))
    status, headers, data = await answer(reader)
    assert status == 200 and headers["connection"] == "close" and data.endswith(b"[DONE]\n\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()


async def test_a_client_leaving_mid_stream_cuts_the_upstream_and_settles_usage(proxy, snapshot, bus):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    reader, writer = await connect(proxy)
    body = {**CHAT, "stream": True, "max_tokens": 40}
    writer.write(post("/v1/chat/completions", value, body, extra="x-fake-delay: 0.05\r\n"))
    await reader.readuntil(b"tok2")
    writer.close()
    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.cut_short and event.streamed and 3 <= event.output_tokens < 40


@pytest.fixture(scope="module")
async def small_proxy(snapshot, nats_url, valkey_url, tmp_path_factory) -> AsyncIterator[RunningProxy]:
    """A proxy with small limits: 4 KiB bodies, 1 KiB header lines."""
    settings = proxy_settings(valkey_url, max_body_bytes=4096, max_header_bytes=1024)
    running = await start_in_process(settings, common_settings(nats_url, tmp_path_factory.mktemp("small")))
    yield running
    await stop_in_process(running)


async def test_an_oversized_body_is_413_and_a_long_header_431_in_openais_format(small_proxy, snapshot):
    value, _ = await snapshot.issue_token()
    await wait_token(small_proxy.base_url, value)
    reader, writer = await connect(small_proxy)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    writer.write(post("/v1/chat/completions", value, big))
    status, headers, data = await answer(reader)
    assert status == 413 and json.loads(data)["error"]["type"] == "invalid_request_error"
    assert headers["x-request-id"].startswith("req_")
    writer.close()

    reader, writer = await connect(small_proxy)
    writer.write(post("/v1/chat/completions", value, extra=f"x-long: {'y' * 2000}\r\n"))
    status, headers, data = await answer(reader)
    assert status == 431 and json.loads(data)["error"]["code"] == "request_header_fields_too_large"
    writer.close()

    # just under the limits: the front end serves it
    reader, writer = await connect(small_proxy)
    writer.write(post("/v1/chat/completions", value, extra=f"x-long: {'y' * 900}\r\n"))
    status, _, _ = await answer(reader)
    assert status == 200 and await served_by(small_proxy, writer) == "front"
    writer.close()


async def test_a_slow_reader_holds_the_stream_back(proxy, token):
    """Backpressure: a client that does not read stops the relay (the upstream is read no further)."""
    reader, writer = await connect(proxy)
    writer.transport.pause_reading()  # type: ignore[attr-defined]
    body = {**CHAT, "stream": True, "max_tokens": 20000}
    writer.write(post("/v1/chat/completions", token, body))
    await asyncio.sleep(1.0)
    writer.transport.resume_reading()  # type: ignore[attr-defined]
    status, _, data = await asyncio.wait_for(answer(reader), 30)
    assert status == 200 and data.endswith(b"data: [DONE]\n\n") and data.count(b"tok19999") == 1
    writer.close()


async def test_shutdown_lets_a_stream_in_flight_finish(snapshot, nats_url, valkey_url, tmp_path):
    running = await start_in_process(proxy_settings(valkey_url), common_settings(nats_url, tmp_path))
    try:
        value, _ = await snapshot.issue_token()
        await wait_token(running.base_url, value)
        reader, writer = await connect(running)
        body = {**CHAT, "stream": True, "max_tokens": 10}
        writer.write(post("/v1/chat/completions", value, body, extra="x-fake-delay: 0.1\r\n"))
        await reader.readuntil(b"tok1")
        stopping = asyncio.create_task(running.runner.cleanup())
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"tok9" in rest and rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
        await stopping
        writer.close()
    finally:
        await running.proxy.stop()


async def test_the_slug_form_is_served_too_and_counted_under_aiohttps_route_name(proxy, token):
    reader, writer = await connect(proxy)
    writer.write(post("/local/v1/chat/completions", token, {**CHAT, "model": "fake-upstream-model"}))
    status, _, data = await answer(reader)
    assert status == 200 and json.loads(data)["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    writer.write(post("/nowhere/v1/embeddings", token, {"model": "gpt-test", "input": "x"}))
    status, _, data = await answer(reader)
    assert status == 404 and "error" in json.loads(data)
    assert await served_by(proxy, writer) == "front"
    writer.write(get("/metrics", token))
    _, _, metrics = await answer(reader)
    assert b'route="/{slug}/v1/{tail}",status="200"' in metrics
    assert b'route="/{slug}/v1/{tail}",status="404"' in metrics
    writer.close()


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n",
        "Content-Length: {n}\r\nContent-Length: 0\r\n",
        "Content-Length: +{n}\r\n",
        "Content-Length : {n}\r\n",
        "Transfer-Encoding: xchunked\r\nContent-Length: {n}\r\n",
        "Content-Length: {n}\r\n Transfer-Encoding: chunked\r\n",
    ],
)
async def test_ambiguous_framing_smuggles_no_request(proxy, token, framing):
    """A body whose length two readers could take differently (both framings, two lengths, a signed or
    folded one) must never let a second request hidden in it run: refused with 400 in OpenAI's format."""
    hidden = f"GET /v1/models HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    body = b"0\r\n\r\n" + hidden
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n" + framing.format(n=len(body)) + "\r\n"
    ).encode()
    reader, writer = await connect(proxy)
    writer.write(head + body)
    received = b""
    with contextlib.suppress(TimeoutError):
        while chunk := await asyncio.wait_for(reader.read(65536), 3):
            received += chunk
    writer.close()
    assert received.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), received[:200]
    assert b'"invalid_http_request"' in received, received[:400]
    assert b'"object":"list"' not in received and b'"object": "list"' not in received, received
