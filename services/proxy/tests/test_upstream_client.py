"""The proxy's HTTP/1.1 upstream client against real servers: the test upstream, raw asyncio servers that
misbehave on purpose (chunked, close-delimited, stale keep-alive, cut-off bodies, trickles), and TLS."""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import socket
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aqueduct_proxy.adapters.http1 import (
    HIGH_WATER,
    Http1Client,
    Http1Response,
    UpstreamConnectError,
    UpstreamDisconnectedError,
    UpstreamPayloadError,
)
from aqueduct_proxy.adapters.upstream import UpstreamClient

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "one two three"}]})
JSON = {"Content-Type": "application/json"}


class RawServer:
    """A TCP server whose handler writes whatever bytes it likes; counts connections, keeps requests."""

    def __init__(
        self, handler: Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ):
        self._handler = handler
        self.connections = 0
        self.open = 0
        self.peak = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self._handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and body), or ``None`` if the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def answer(body: bytes = b"ok", *extra: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Content-Type: text/plain", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def keep_alive(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await server.read_request(reader) is not None:
        writer.write(answer())
        await writer.drain()


@pytest.fixture
async def client() -> AsyncIterator[Http1Client]:
    http = Http1Client(read_timeout=5.0, connect_timeout=2.0)
    yield http
    await http.close()


# -- against the test upstream -----------------------------------------------------------------------------


async def test_json_call_reuses_one_connection(client: Http1Client, upstream) -> None:
    for _ in range(5):
        response = await client.request("POST", upstream.url + "/chat/completions", headers=JSON, data=CHAT)
        assert response.status == 200 and response.reason == "OK"
        assert response.content_type == "application/json"
        assert "content-type" in response.headers
        assert response.headers.get("CONTENT-LENGTH") == str(len(await response.read()))
        body = orjson.loads(await response.read())  # read twice: the same body
        assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4"
        response.release()
    assert client.open_connections == 1


async def test_answers_are_freed_by_reference_counting(client: Http1Client, upstream) -> None:
    """No answer is left in a reference cycle: the cyclic garbage collector, which every few dozen such
    answers would run (its pause landing on a request), has nothing of it to collect."""
    stream = orjson.dumps({"model": "m", "stream": True, "max_tokens": 3, "messages": []})
    gc.collect()
    gc.disable()
    try:
        for body, ending in ((CHAT, "release"), (stream, "release"), (stream, "close")):
            response = await client.request(
                "POST", upstream.url + "/chat/completions", headers=JSON, data=body
            )
            if ending == "release":
                await response.read()
                response.release()
            else:
                await response.content.readany()
                response.close()  # mid-answer
            gone = weakref.ref(response)
            del response
            assert gone() is None, ending
    finally:
        gc.enable()


async def test_stream_yields_each_event_as_it_arrives(client: Http1Client, upstream) -> None:
    payload = orjson.dumps({"model": "m", "stream": True, "max_tokens": 4, "messages": []})
    started = time.perf_counter()
    response = await client.request(
        "POST", upstream.url + "/chat/completions", headers={**JSON, "x-fake-delay": "0.2"}, data=payload
    )
    assert response.content_type == "text/event-stream"
    arrivals, events = [], b""
    async for data in response.content.iter_any():
        arrivals.append(time.perf_counter() - started)
        events += data
    response.release()
    assert events.endswith(b"data: [DONE]\n\n")
    assert events.count(b"data: ") == 7  # role, four words, finish, [DONE]
    assert len(arrivals) >= 5  # not buffered into one piece
    assert arrivals[0] < 0.15 and arrivals[-1] > 0.75  # the first event long before the last


async def test_upstream_client_sends_forms_through_aiohttp_and_bytes_through_http1(upstream) -> None:
    http = UpstreamClient(timeout=5.0)
    await http.start()
    try:
        lean = await http.request("POST", upstream.url + "/embeddings", headers=JSON, data=b'{"input":"a b"}')
        assert isinstance(lean, Http1Response) and lean.status == 200
        lean.release()
        form = aiohttp.FormData()
        form.add_field("model", "whisper")
        form.add_field("file", b"RIFF....", filename="a.wav", content_type="audio/wav")
        upload = await http.request("POST", upstream.url + "/audio/transcriptions", headers={}, data=form)
        assert isinstance(upload, aiohttp.ClientResponse) and upload.status == 200
        upload.release()
    finally:
        await http.close()


# -- the request as sent -----------------------------------------------------------------------------------


async def test_request_head_is_exactly_what_the_caller_gave(client: Http1Client) -> None:
    async with RawServer(keep_alive) as server:
        headers = {"X-Request-ID": "abc", "Content-Type": "application/json", "OpenAI-Beta": "x"}
        response = await client.request(
            "POST", server.url + "/v1/x?a=1&b=two%20words", headers=headers, data=b"{}"
        )
        await response.read()
        response = await client.request("GET", server.url + "/v1/models", headers={})
        await response.read()
    post, get = server.requests
    head = post.split(b"\r\n\r\n")[0].split(b"\r\n")
    port = server.url.rsplit(":", 1)[1]
    assert head[0] == b"POST /v1/x?a=1&b=two%20words HTTP/1.1"
    assert sorted(head[1:]) == sorted(
        [
            b"X-Request-ID: abc",
            b"Content-Type: application/json",
            b"OpenAI-Beta: x",
            f"Host: 127.0.0.1:{port}".encode(),
            b"Content-Length: 2",
        ]
    )
    assert post.endswith(b"\r\n\r\n{}")
    assert get == f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


@pytest.mark.parametrize(
    "headers",
    [{"X-A": "b\r\nX-Evil: 1"}, {"X-A": "b\nc"}, {"X-A\r\nX-Evil": "1"}, {"X A": "1"}, {"": "1"}],
)
async def test_header_injection_is_refused_before_anything_is_sent(client: Http1Client, headers) -> None:
    async with RawServer(keep_alive) as server:
        with pytest.raises(ValueError, match="HTTP header"):
            await client.request("POST", server.url + "/v1/x", headers=headers, data=b"{}")
    assert server.connections == 0


# -- answers of every shape --------------------------------------------------------------------------------


async def test_chunked_body(client: Http1Client) -> None:
    async def chunked(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        )
        for piece in (b'{"a":', b" 1", b"}"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await keep_alive(server, reader, writer)

    async with RawServer(chunked) as server:
        response = await client.request("POST", server.url + "/v1/x", headers={}, data=b"{}")
        assert await response.read() == b'{"a": 1}'
        again = await client.request("POST", server.url + "/v1/x", headers={}, data=b"{}")
        assert await again.read() == b"ok"
    assert server.connections == 1  # a complete chunked body leaves the connection reusable


async def test_body_delimited_by_close_and_http10(client: Http1Client) -> None:
    async def until_close(server: RawServer, reader, writer) -> None:
        request = await server.read_request(reader)
        version = b"1.0" if request and b"/old" in request else b"1.1"
        writer.write(b"HTTP/" + version + b" 200 OK\r\nContent-Type: text/plain\r\n\r\nall of")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b" it")

    async with RawServer(until_close) as server:
        for path in ("/new", "/old"):
            response = await client.request("GET", server.url + path, headers={})
            assert await response.read() == b"all of it"
    assert server.connections == 2  # never reused


async def test_connection_close_answer_is_not_reused(client: Http1Client) -> None:
    async def closing(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b"bye", "Connection: close"))

    async with RawServer(closing) as server:
        for _ in range(2):
            response = await client.request("GET", server.url + "/", headers={})
            assert await response.read() == b"bye"
    assert server.connections == 2


async def test_head_204_304_and_interim_answers_have_no_body(client: Http1Client) -> None:
    async def shapes(server: RawServer, reader, writer) -> None:
        while (request := await server.read_request(reader)) is not None:
            if request.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            elif b"/204" in request:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            elif b"/304" in request:
                writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(answer(b"after continue", "X-Final: yes"))

    async with RawServer(shapes) as server:
        head = await client.request("HEAD", server.url + "/", headers={})
        assert (head.status, head.headers["Content-Length"], await head.read()) == (200, "1000", b"")
        for status in (204, 304):
            response = await client.request("GET", f"{server.url}/{status}", headers={})
            assert (response.status, await response.read()) == (status, b"")
        final = await client.request("POST", server.url + "/", headers={"Expect": "100-continue"}, data=b"x")
        assert (final.status, final.headers["X-Final"], await final.read()) == (200, "yes", b"after continue")
        assert "Content-Length" in final.headers and final.reason == "OK"
    assert server.connections == 1


# -- connections that go away ------------------------------------------------------------------------------


async def test_stale_keep_alive_connection_is_retried_once_on_a_new_one(client: Http1Client) -> None:
    async def one_answer_per_connection(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)
        writer.write(answer())  # says keep-alive, then closes after reading the next request
        await writer.drain()
        await server.read_request(reader)

    async with RawServer(one_answer_per_connection) as server:
        for _ in range(3):
            response = await client.request("POST", server.url + "/v1/x", headers={}, data=b"{}")
            assert await response.read() == b"ok"
    assert len(server.requests) == 5  # the second and third each sent twice: once lost, once answered
    assert server.connections == 3


async def test_a_new_connection_closed_without_an_answer_is_not_retried(client: Http1Client) -> None:
    async def hang_up(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)

    async with RawServer(hang_up) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.request("POST", server.url + "/v1/x", headers={}, data=b"{}")
    assert server.connections == 1
    assert client.open_connections == 0


async def test_connection_refused_is_a_connection_error(client: Http1Client) -> None:
    async with RawServer(keep_alive) as server:
        url = server.url
    with pytest.raises(UpstreamConnectError) as refused:
        await client.request("GET", url + "/", headers={})
    assert isinstance(refused.value, aiohttp.ClientConnectionError)
    assert client.open_connections == 0


async def test_garbage_instead_of_http_is_a_connection_error(client: Http1Client) -> None:
    async def garbage(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RawServer(garbage) as server:
        with pytest.raises(UpstreamDisconnectedError, match="invalid HTTP"):
            await client.request("GET", server.url + "/", headers={})
    assert client.open_connections == 0


async def test_body_cut_short_is_a_payload_error(client: Http1Client) -> None:
    async def cut(server: RawServer, reader, writer) -> None:
        request = await server.read_request(reader)
        if request and b"/chunked" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
            await writer.drain()
            await reader.read()
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")

    async with RawServer(cut) as server:
        for path in ("/length", "/chunked"):
            response = await client.request("GET", server.url + path, headers={})
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
            response.release()
    assert client.open_connections == 0


async def test_stream_cut_short_gives_what_arrived_then_raises(client: Http1Client, upstream) -> None:
    payload = orjson.dumps({"model": "m", "stream": True, "max_tokens": 6, "messages": []})
    headers = {**JSON, "x-fake-break-after": "2"}
    response = await client.request("POST", upstream.url + "/chat/completions", headers=headers, data=payload)
    received = b""
    with pytest.raises(UpstreamPayloadError):
        async for data in response.content.iter_any():
            received += data
    response.close()
    assert received.count(b"data: ") == 3


# -- time limits ---------------------------------------------------------------------------------------------


async def test_read_timeout_is_between_bytes_not_for_the_whole_answer() -> None:
    async def trickle(server: RawServer, reader, writer) -> None:
        while (request := await server.read_request(reader)) is not None:
            if b"/silent" in request:
                await reader.read()
                return
            gap = 0.1 if b"/steady" in request else 0.6
            head = b"HTTP/1.1 200 OK\r\nX-Slow: 1\r\nX-Slower: 2\r\nContent-Length: 8\r\n\r\n"
            for line in head.splitlines(keepends=True) if b"/steady-head" in request else [head]:
                writer.write(line)  # a head in pieces: bytes arrive, no answer yet
                await writer.drain()
                await asyncio.sleep(gap)
            for byte in b"12345678":
                await writer.drain()
                await asyncio.sleep(gap)
                writer.write(bytes([byte]))

    http = Http1Client(read_timeout=0.35)
    try:
        async with RawServer(trickle) as server:
            steady = await http.request("GET", server.url + "/steady", headers={})
            assert await steady.read() == b"12345678"  # 0.8 s in all, no gap over 0.35 s
            steady = await http.request("GET", server.url + "/steady-head", headers={})
            assert (steady.headers["X-Slower"], await steady.read()) == ("2", b"12345678")
            slow = await http.request("GET", server.url + "/slow", headers={})
            started = time.perf_counter()
            with pytest.raises(TimeoutError):
                await slow.read()
            assert 0.3 < time.perf_counter() - started < 1.0
            with pytest.raises(TimeoutError):
                await http.request("GET", server.url + "/silent", headers={})
        assert http.open_connections == 0  # a connection that timed out is never reused
        assert server.connections == 2  # the steady one carried the slow request too
    finally:
        await http.close()


async def test_connect_timeout() -> None:
    # A listener whose accept queue is full drops new handshakes: the connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    http = Http1Client(connect_timeout=0.3)
    try:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await http.request("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/", headers={})
        assert time.perf_counter() - started < 1.5
        assert http.open_connections == 0
    finally:
        await http.close()
        for sock in (*fillers, listener):
            sock.close()


# -- the pool --------------------------------------------------------------------------------------------


async def test_pool_caps_connections_and_closes_idle_ones() -> None:
    async def slow_keep_alive(server: RawServer, reader, writer) -> None:
        while await server.read_request(reader) is not None:
            await asyncio.sleep(0.05)
            writer.write(answer())
            await writer.drain()

    http = Http1Client(pool_size=2, keepalive_timeout=0.3)
    try:
        async with RawServer(slow_keep_alive) as server:

            async def call() -> bytes:
                response = await http.request("GET", server.url + "/", headers={})
                return await response.read()

            assert await asyncio.gather(*(call() for _ in range(8))) == [b"ok"] * 8
            assert server.peak == 2 and server.connections == 2
            assert http.open_connections == 2
            await asyncio.sleep(0.8)
            assert http.open_connections == 0 and server.open == 0
    finally:
        await http.close()


async def test_release_before_the_end_drops_the_connection(client: Http1Client) -> None:
    async def big(server: RawServer, reader, writer) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer(b"x" * 5_000_000))
            await writer.drain()

    async with RawServer(big) as server:
        response = await client.request("GET", server.url + "/", headers={})
        await response.content.readany()
        response.release()  # most of the body not read: the connection cannot carry another request
        assert client.open_connections == 0
        response = await client.request("GET", server.url + "/", headers={})
        assert len(await response.read()) == 5_000_000
        assert client.open_connections == 1
    assert server.connections == 2


async def test_slow_reader_pauses_the_socket(client: Http1Client) -> None:
    size = 64 * 1024 * 1024
    sent = asyncio.Event()

    async def flood(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"x" * (1024 * 1024)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        sent.set()

    async with RawServer(flood) as server:
        response = await client.request("GET", server.url + "/", headers={})
        total = len(await response.content.readany())
        await asyncio.sleep(0.5)  # a slow client: the upstream must not fill the proxy's memory
        assert response.content.buffered < HIGH_WATER + 1024 * 1024
        assert not sent.is_set()  # the server is held back by TCP
        while data := await response.content.readany():
            total += len(data)
        assert total == size
        response.release()


async def test_cancelled_reader_closes_the_connection(client: Http1Client, upstream) -> None:
    payload = orjson.dumps({"model": "m", "stream": True, "max_tokens": 50, "messages": []})
    headers = {**JSON, "x-fake-delay": "0.05"}
    response = await client.request("POST", upstream.url + "/chat/completions", headers=headers, data=payload)

    async def consume() -> None:
        try:
            async for _ in response.content.iter_any():
                pass
        finally:
            response.release()  # as the relay does: release() on an unfinished body must not pool it

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.open_connections == 0

    async def never_answers(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)
        await reader.read()

    async with RawServer(never_answers) as server:
        waiting = asyncio.create_task(client.request("GET", server.url + "/", headers={}))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert client.open_connections == 0


async def test_closing_the_client_wakes_a_waiting_reader() -> None:
    async def half(server: RawServer, reader, writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()
        await reader.read()

    http = Http1Client()
    async with RawServer(half) as server:
        response = await http.request("GET", server.url + "/", headers={})
        reading = asyncio.create_task(response.read())
        await asyncio.sleep(0.05)
        await http.close()
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(reading, 2)
        assert http.open_connections == 0


# -- TLS --------------------------------------------------------------------------------------------------


def _certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost and 127.0.0.1, signed by it."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name | None, key, signer, *, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", None, ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("localhost", ca.subject, key, ca_key, ca=False)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    ca, cert, key = _certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: seen_sni.append(name)  # type: ignore[assignment]

    async def keep_alive_tls(server: RawServer, reader, writer) -> None:
        await keep_alive(server, reader, writer)

    handler = RawServer(keep_alive_tls)
    tcp = await asyncio.start_server(handler._serve, "127.0.0.1", 0, ssl=server_tls)
    port = tcp.sockets[0].getsockname()[1]
    trusting = Http1Client(ssl_context=ssl.create_default_context(cafile=str(ca)), read_timeout=5.0)
    default = Http1Client(read_timeout=5.0)
    try:
        for _ in range(2):
            response = await trusting.request(
                "POST", f"https://localhost:{port}/v1/x", headers={}, data=b"{}"
            )
            assert (response.status, await response.read()) == (200, b"ok")
        assert handler.connections == 1 and seen_sni == ["localhost"]
        assert handler.requests[0].split(b"\r\n")[1] == f"Host: localhost:{port}".encode()
        with pytest.raises(aiohttp.ClientConnectionError, match="certificate verify failed"):
            await default.request("GET", f"https://localhost:{port}/", headers={})
    finally:
        await trusting.close()
        await default.close()
        tcp.close()
        await tcp.wait_closed()


# -- an organisation's egress proxy ------------------------------------------------------------------------


def test_egress_proxy_rules_follow_the_environment_conventions() -> None:
    from aqueduct_proxy.adapters.upstream import EgressProxies

    none = EgressProxies({})
    assert not none and none.for_url("https://api.openai.com/v1") is None
    both = EgressProxies(
        {
            "HTTPS_PROXY": "http://egress:3128",
            "http_proxy": "http://plain:3128",
            "NO_PROXY": "localhost,.internal",
        }
    )
    assert both.for_url("https://api.openai.com/v1/chat/completions") == "http://egress:3128"
    assert both.for_url("http://vllm.example.org:8000/v1") == "http://plain:3128"
    assert both.for_url("http://gpu1.internal:8000/v1") is None  # a domain suffix in NO_PROXY
    assert both.for_url("http://localhost:8000/v1") is None
    # The lower-case variable wins over the upper-case one, as curl decides.
    assert EgressProxies({"HTTPS_PROXY": "http://a:1", "https_proxy": "http://b:2"}).for_url("https://x") == (
        "http://b:2"
    )
    assert EgressProxies({"HTTPS_PROXY": "http://a:1", "NO_PROXY": "*"}).for_url("https://x/v1") is None


async def test_upstream_calls_cross_the_egress_proxy_unless_no_proxy_exempts_the_host(upstream) -> None:
    from aqueduct_proxy.adapters.upstream import EgressProxies
    from tests.support.forward_proxy import ForwardProxy

    async with ForwardProxy() as egress:
        for environ, through in (
            ({"HTTP_PROXY": egress.url}, True),
            ({"HTTP_PROXY": egress.url, "NO_PROXY": "127.0.0.1"}, False),
        ):
            http = UpstreamClient(timeout=5.0, egress=EgressProxies(environ))
            await http.start()
            before = len(egress.targets)
            try:
                answer = await http.request(
                    "POST", upstream.url + "/chat/completions", headers=JSON, data=CHAT
                )
                assert answer.status == 200 and b"choices" in await answer.read()
                answer.release()
            finally:
                await http.close()
            went = egress.targets[before:]
            assert went == ([f"POST {upstream.url}/chat/completions"] if through else [])


async def test_the_aiohttp_client_option_serves_json_calls_too(upstream) -> None:
    http = UpstreamClient(timeout=5.0, client="aiohttp")
    await http.start()
    try:
        answer = await http.request("POST", upstream.url + "/chat/completions", headers=JSON, data=CHAT)
        assert isinstance(answer, aiohttp.ClientResponse) and answer.status == 200
        assert b"choices" in await answer.read()
        answer.release()
    finally:
        await http.close()
