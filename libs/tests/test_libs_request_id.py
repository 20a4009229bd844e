"""The x-request-id rule: a sane client value is kept, anything else replaced; the id reaches the logs."""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        kept = await client.get("/work", headers={"x-request-id": "client-7"})
        fresh = await client.get("/work", headers={"x-request-id": "not sane!"})
        missing = await client.get("/nowhere")
        failed = await client.get("/broken", headers={"x-request-id": "client-500"})
    assert kept.headers["x-request-id"] == "client-7" and seen[0] == "client-7"
    assert records[0].request_id == "client-7"  # type: ignore[attr-defined]
    assert fresh.headers["x-request-id"].startswith("req_") and seen[1] == fresh.headers["x-request-id"]
    assert missing.status_code == 404 and missing.headers["x-request-id"].startswith("req_")
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "client-500"
    assert current_request_id() is None


async def test_an_app_s_own_500_answer_is_kept_and_carries_the_id() -> None:
    app = FastAPI()
    add_operational_routes(app, ready=lambda: True)

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"title": "internal"}, status_code=500, media_type="application/problem+json")

    app.add_exception_handler(Exception, problem)

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        failed = await client.get("/broken")
    assert failed.status_code == 500 and failed.json() == {"title": "internal"}
    assert failed.headers["x-request-id"].startswith("req_")
