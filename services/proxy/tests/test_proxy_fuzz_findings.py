"""Requests the fuzzer (tests/fuzz) found answered with a 5xx, each kept as a regression test."""

from __future__ import annotations

import aiohttp
import pytest

from aqueduct_proxy.batches.domain import BatchNotFoundError
from aqueduct_proxy.batches.store import BatchStore
from aqueduct_proxy.files.domain import FileNotFoundInStoreError
from aqueduct_proxy.files.store import FileStore
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


# Ids with bytes a NATS key cannot hold; the fuzzer sent the first one to /v1/files/{file_id}.
ODD_IDS = ["\u00ad\\P\u00d8?\u00afg\u00bb", "file with spaces", "a.b>", "*"]


@pytest.mark.parametrize("odd_id", ODD_IDS)
async def test_a_file_or_batch_id_that_cannot_be_a_key_is_not_found(bus, odd_id) -> None:
    """Found on GET/DELETE /v1/files/{file_id}, .../content and /v1/batches/{batch_id}: a 500."""
    files, batches = FileStore(bus, quota_bytes_per_user=1024), BatchStore(bus)
    await files.start()
    await batches.start()
    with pytest.raises(FileNotFoundInStoreError):
        await files.get("user-1", odd_id)
    with pytest.raises(FileNotFoundInStoreError):
        await files.delete("user-1", odd_id)
    with pytest.raises(BatchNotFoundError):
        await batches.get("user-1", odd_id)
    with pytest.raises(BatchNotFoundError):
        await batches.mutate("user-1", odd_id, lambda batch: batch)
