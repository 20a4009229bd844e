"""The proxy's client of the auth service's JupyterHub exchange, against a server that closes kept-alive
connections as aiohttp's and uvicorn's idle timeouts do: a request that goes out on a connection the server
has just closed is sent again on a fresh one, not answered 503."""

from __future__ import annotations

import asyncio
import json

import pytest

from aqueduct_proxy.jupyterhub.exchange import AuthExchangeClient, AuthUnreachable

ANSWER = json.dumps({"user": {"user_id": "u-1"}}).encode()


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """One request (head and body); False if the connection closed first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return True


async def _answer(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (len(ANSWER), ANSWER)
    )
    await writer.drain()


async def _server(close_after: int) -> tuple[asyncio.Server, list[int], str]:
    """Each connection answers ``close_after`` requests, then reads the next one and closes without an
    answer (its idle timeout struck as the request arrived). Returns the requests seen per connection."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(0)
        me = len(seen) - 1
        while await _read_request(reader):
            seen[me] += 1
            if seen[me] > close_after:
                break
            await _answer(writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, seen, f"http://127.0.0.1:{port}"


async def test_a_request_on_a_connection_the_auth_service_just_closed_goes_again() -> None:
    server, seen, url = await _server(close_after=1)
    client = AuthExchangeClient(url, timeout=5)
    await client.start()
    try:
        assert await client.exchange("hub-token") == "u-1"  # a fresh connection, kept alive
        assert await client.exchange("hub-token") == "u-1"  # on it: closed unanswered, then a new one
        assert seen[:2] == [2, 1]
    finally:
        await client.close()
        server.close()


async def test_a_server_that_never_answers_is_unreachable_after_the_second_try() -> None:
    server, seen, url = await _server(close_after=0)
    client = AuthExchangeClient(url, timeout=5)
    await client.start()
    try:
        with pytest.raises(AuthUnreachable):
            await client.exchange("hub-token")
        assert seen == [1, 1]  # tried twice, not forever
    finally:
        await client.close()
        server.close()
