"""Every service's one FastStream ``NatsBroker``: its stream handlers, and the nats-py connection it opens.

A service registers its handlers (``NatsRouter``s of typed handlers) on the broker before it starts, or
adds one to a running broker with ``subscribe``; once started, ``broker.connection`` is the service's
nats-py client for what FastStream does not wrap (KV and object stores, stream management). Publishes go
through the broker's publishers (``aqueduct_libs.publishers``). The connection options are ``bus.connect``'s: reconnect
forever, replies under the NATS user's own inbox prefix (``_INBOX_<service>``, the only inbox its
allow-list in ``aqueduct_cli.nats_users`` lets it read), a silent node noticed in about 15 s.

``SPEC_URL`` is the address the AsyncAPI document names (``aqueduct asyncapi``), so the document does not
depend on where this machine's bus runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from faststream.nats import NatsBroker, NatsRouter
from faststream.nats.security import NatsToken
from faststream.nats.subscriber.usecases.basic import LogicSubscriber
from faststream.security import BaseSecurity, SASLPlaintext

from aqueduct_libs.bus import credentials_of, expected_refusal, inbox_prefix_of, servers_of

__all__ = ["OWN_INBOX", "SPEC_URL", "new_broker", "subscribe"]

log = logging.getLogger(__name__)


class _ExpectedRefusals(logging.Filter):
    """FastStream logs every error the server sends as "Connection broken" (a warning), the refusal of a
    stream create by a service that may not create it too: every service tries at start, only the
    directory may (``bus._create_or_await`` waits for it). That one is expected, not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not expected_refusal(record.getMessage())


log.addFilter(_ExpectedRefusals())

SPEC_URL = "nats://nats:4222"
# A pull subscriber's ``inbox_prefix``: ``None`` makes nats-py answer fetches under the connection's own
# prefix; FastStream's default, ``_INBOX.``, is one a per-service NATS user may not read.
OWN_INBOX: Any = None


def new_broker(
    url: str | None, name: str, routers: tuple[NatsRouter, ...] = (), description: str | None = None
) -> NatsBroker:
    """A broker for ``url`` (``None``: only for the AsyncAPI document, never started)."""
    security: BaseSecurity | None = None
    found = credentials_of(url) if url else None
    if found and found[1]:
        security = SASLPlaintext(username=found[0], password=found[1])
    elif found:
        security = NatsToken(found[0])
    extra: dict[str, Any] = {"security": security} if security else {}
    return NatsBroker(
        servers=servers_of(url) if url else [SPEC_URL],
        name=name,
        inbox_prefix=inbox_prefix_of(url) if url else "_INBOX",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py takes seconds as a float
        allow_reconnect=True,
        connect_timeout=2,
        ping_interval=5,
        max_outstanding_pings=3,
        routers=routers,
        specification_url=SPEC_URL,
        description=description,
        logger=log,
        log_level=logging.DEBUG,  # one line per message would flood the log; failures are logged anyway
        graceful_timeout=5.0,
        **extra,
    )


async def subscribe(
    broker: NatsBroker, subject: str, handler: Callable[..., Any], **options: Any
) -> LogicSubscriber[Any]:
    """Add a handler to a running broker (a subject known only at run time, e.g. an inbox) and start it."""
    subscriber = broker.subscriber(subject, persistent=False, **options)
    subscriber(handler)
    await subscriber.start()
    return subscriber  # type: ignore[return-value]
