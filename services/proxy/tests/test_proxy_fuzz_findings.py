"""Requests the fuzzer (tests/fuzz) found answered with a 5xx, each kept as a regression test."""

from __future__ import annotations

import aiohttp
import pytest

from conftest import wait_token


@pytest.mark.parametrize("route", ["audio/transcriptions", "audio/translations"])
async def test_a_multipart_part_with_a_control_character_in_its_header_is_a_400(
    proxy, snapshot, route
) -> None:
    """Found on /v1/audio/transcriptions: aiohttp's parser refuses the part header ``name="Ý\\x1a"``."""
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    boundary = "db1fd750f2fa310ab1ebe5f5e21a333f"
    parts = [("»", "{}"), ("c:\U000565a7R", '{"a": 1}'), ("", "2.9e16"), ("Ý\x1a", "null")]
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{data}\r\n'
            for name, data in parts
        )
        + f"--{boundary}--\r\n"
    )
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {value}"}) as s:
        async with s.post(
            f"{proxy.v1}/{route}",
            data=body.encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        ) as r:
            answer = await r.json()
            assert r.status == 400, answer
            assert answer["error"]["type"] == "invalid_request_error"
            assert "malformed" in answer["error"]["message"]
