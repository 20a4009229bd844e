"""Opening a store on the bus as the proxy starts, without making its start wait for a NATS election.

Checking a stream or bucket asks its leader. On a NATS cluster that just lost the node leading it, no
leader answers for 4 to 9 s (NATS's Raft timing), and a proxy restarted meanwhile would not listen
until then, though it could serve chat completions (the auth snapshot loads from any replica, usage is
journalled locally). So a store gets ``OPEN_WAIT_SECONDS`` to open with the application; after that the
proxy listens anyway, the store opens in the background, and its routes answer 503
(``StoreUnavailableError``) until it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["OPEN_WAIT_SECONDS", "open_on_startup"]

log = logging.getLogger(__name__)

OPEN_WAIT_SECONDS = 1.0
RETRY_SECONDS = 1.0


def open_on_startup(
    app: web.Application, start: Callable[[], Awaitable[None]], what: str, wait: float = OPEN_WAIT_SECONDS
) -> None:
    """Run ``start`` when ``app`` starts: a failure within ``wait`` fails the start (a misconfiguration
    shows at once); after it, the opening goes on in the background, retried until it succeeds."""
    tasks: set[asyncio.Task[None]] = set()

    async def keep_opening(first: asyncio.Task[None]) -> None:
        try:
            await first
            return
        except Exception as exc:
            log.error("could not open %s (%s); retrying", what, exc)
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await start()
            except Exception as exc:
                log.error("could not open %s (%s); retrying", what, exc)
            else:
                log.info("%s open", what)
                return

    async def on_startup(app: web.Application) -> None:
        first = asyncio.create_task(_awaited(start), name=f"open {what}")
        done, _ = await asyncio.wait({first}, timeout=wait)
        if done:
            first.result()  # raises what the opening raised
            return
        log.warning(
            "%s not open after %.0fs (a NATS cluster electing a leader?): serving, it opens in the background",
            what,
            wait,
        )
        tasks.add(asyncio.create_task(keep_opening(first), name=f"keep opening {what}"))

    async def on_cleanup(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)


async def _awaited(start: Callable[[], Awaitable[None]]) -> None:
    await start()
