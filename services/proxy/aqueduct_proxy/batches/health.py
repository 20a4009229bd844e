"""The batch worker's operational HTTP server: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

Ready means: connected to NATS, the snapshot loaded and the shared consumer bound and being fetched
from; a worker that lost the bus, or is stopping, answers 503 so an orchestrator stops counting on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aqueduct_libs.request_id import setup_aiohttp_request_ids
from aqueduct_proxy.batches.worker import BatchWorker

__all__ = ["health_app"]


class _LineMetrics(Collector):
    """Read from the worker when scraped: nothing on the path of a line but two integer increments."""

    def __init__(self, worker: BatchWorker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self._worker
        yield CounterMetricFamily(
            "aqueduct_batch_worker_lines_done", "Batch lines answered and acknowledged", value=w.lines_done
        )
        yield CounterMetricFamily(
            "aqueduct_batch_worker_lines_failed",
            "Batch lines answered with an error (in the error file), of those done",
            value=w.lines_failed,
        )
        yield GaugeMetricFamily(
            "aqueduct_batch_worker_lines_in_flight", "Batch lines being run now", value=w.in_flight
        )


def health_app(
    worker: BatchWorker, ready: Callable[[], bool], registry: CollectorRegistry
) -> web.Application:
    """``registry`` gets the line metrics; it also holds the gateway's (upstream errors, limit refusals)."""
    registry.register(_LineMetrics(worker))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    setup_aiohttp_request_ids(app)
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)])
    return app
