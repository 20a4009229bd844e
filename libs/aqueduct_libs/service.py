"""The one shape of every service's composition root.

Each service package has ``bootstrap.py`` with

- ``async def bootstrap(settings) -> Service``: wire the real adapters from the service's settings, which
  carry the common ones as ``settings.common`` (``AQUEDUCT_*``; it may connect: the proxy and accounting
  reach the bus and their stores); more parameters only as keywords with defaults (what tests choose);
- ``def run() -> None``: the process entry point (``python -m aqueduct_<name>``): read the settings from
  the environment, configure logging, serve ``Service.app`` until SIGTERM, then stop.

``tests/test_service_shape.py`` holds every service, and the batch worker (``aqueduct_proxy.batches``), to it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["LifespanService", "Service"]


@runtime_checkable
class Service(Protocol):
    """What ``bootstrap`` returns: the HTTP application and the work that runs beside it."""

    @property
    def app(self) -> Any:
        """The ASGI application (FastAPI) or, for the proxy, the aiohttp one."""

    async def start(self) -> None:
        """Start the background work: watchers, consumers, loops (the app's lifespan may call it)."""

    async def stop(self) -> None:
        """Stop it, delivering what is in hand, and let go of the connections."""

    def ready(self) -> bool:
        """Whether requests can be served now (``/readyz``)."""


@dataclass
class LifespanService:
    """A service whose whole lifecycle is its FastAPI app's lifespan (auth, UI): ``start`` enters it,
    ``stop`` leaves it. Served by uvicorn, the lifespan runs as usual and these two are not called."""

    app: Any
    is_ready: Callable[[], bool]
    _running: AbstractAsyncContextManager[Any] | None = field(default=None, repr=False)

    async def start(self) -> None:
        running = self.app.router.lifespan_context(self.app)
        await running.__aenter__()
        self._running = running

    async def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running.__aexit__(None, None, None)

    def ready(self) -> bool:
        return self.is_ready()
