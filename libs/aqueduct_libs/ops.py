"""Operational HTTP routes every service exposes: ``/healthz``, ``/readyz``, ``/metrics``; and logging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aqueduct_libs.logs import configure_logging
from aqueduct_libs.request_id import add_request_ids

__all__ = ["add_operational_routes", "configure_logging"]


def add_operational_routes(
    app: FastAPI,
    ready: Callable[[], bool],
    registry: CollectorRegistry | None = None,
    reasons: Callable[[], list[str]] | None = None,
) -> None:
    """``/healthz``: the process answers. ``/readyz``: it can do its job (``ready()``; when not, the
    ``reasons`` why, if given). ``/metrics``. And an ``x-request-id`` on every answer of the app
    (``aqueduct_libs.request_id``)."""
    add_request_ids(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, Any]:
        if ready():
            return {"status": "ready"}
        response.status_code = 503
        if reasons is not None:
            return {"status": "not ready", "reasons": reasons()}
        return {"status": "not ready"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        from prometheus_client import REGISTRY

        return Response(generate_latest(registry or REGISTRY), media_type=CONTENT_TYPE_LATEST)
