"""Requests aiohttp cannot parse are answered in OpenAI's format by the proxy's own connection handler,
and its log line names the status the client got (never the offending header)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from aqueduct_cli.embedded import free_port
from aqueduct_proxy.entrypoints.server import OpenAIErrorsRunner


async def test_a_header_over_the_limit_is_a_431_and_logged_as_one(caplog: pytest.LogCaptureFixture) -> None:
    runner = OpenAIErrorsRunner(web.Application(), max_header_bytes=1024)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    secret = "aq-" + "s" * 2000
    try:
        with caplog.at_level(logging.WARNING, logger="aqueduct_proxy.entrypoints.server"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()
            )
            await writer.drain()
            answer = (await asyncio.wait_for(reader.read(), 10)).decode()
            writer.close()
    finally:
        await runner.cleanup()
    assert answer.split(" ", 2)[1] == "431"
    assert '"code":"request_header_fields_too_large"' in answer
    [line] = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert "431" in line and secret not in line
