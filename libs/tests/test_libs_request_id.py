"""The x-request-id rule: a sane client value is kept, anything else replaced; the id reaches the logs."""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI

from aqueduct_libs.ops import add_operational_routes
from aqueduct_libs.request_id import RequestIdLogFilter, current_request_id, request_id_of


def test_sane_client_ids_are_kept_and_others_replaced() -> None:
    assert request_id_of("trace-42_a.b:c") == "trace-42_a.b:c"
    for bad in (None, "", "has space", "x" * 129, "semi;colon", "nl\nx", "ünï"):
        replaced = request_id_of(bad)
        assert replaced != bad and replaced.startswith("req_") and len(replaced) == 28


async def test_every_answer_of_a_fastapi_service_carries_the_id_seen_by_its_logs() -> None:
    app = FastAPI()
    add_operational_routes(app, ready=lambda: True)
    seen: list[str | None] = []
    records: list[logging.LogRecord] = []

    @app.get("/work")
    async def work() -> dict[str, str]:
        seen.append(current_request_id())
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "working", None, None)
        RequestIdLogFilter().filter(record)
        records.append(record)
        return {"ok": "yes"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        kept = await client.get("/work", headers={"x-request-id": "client-7"})
        fresh = await client.get("/work", headers={"x-request-id": "not sane!"})
        missing = await client.get("/nowhere")
    assert kept.headers["x-request-id"] == "client-7" and seen[0] == "client-7"
    assert records[0].request_id == "client-7"  # type: ignore[attr-defined]
    assert fresh.headers["x-request-id"].startswith("req_") and seen[1] == fresh.headers["x-request-id"]
    assert missing.status_code == 404 and missing.headers["x-request-id"].startswith("req_")
    assert current_request_id() is None
