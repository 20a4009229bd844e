"""The auth service on the bus: the directory's sign-in RPC, auth events, the JWKS and ended sessions in KV."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import nats.errors
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from prometheus_client import Counter

from aqueduct_auth.domain.errors import DirectoryUnavailableError, SignInRefusedError
from aqueduct_auth.domain.sign_in import DirectoryUser, SignInRequest
from aqueduct_libs import names
from aqueduct_libs.events import AuthEvent
from aqueduct_libs.sessions import JWKS_KEY

__all__ = ["DirectoryClient", "EventPublisher", "RevokedSessionsPublisher", "publish_jwks"]

log = logging.getLogger(__name__)

# Every auth event passes through the publisher, so it is the one place to count them.
AUTH_EVENTS = Counter(
    "aqueduct_auth_events_total",
    "Sign-ins, sign-outs and failed sign-in attempts",
    ["type", "method", "reason"],
)


class DirectoryClient:
    """Asks the directory to resolve or provision a signed-in user (``directory.rpc.v1.sign_in``)."""

    def __init__(self, broker: NatsBroker, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout

    async def sign_in(self, request: SignInRequest) -> DirectoryUser:
        try:
            reply = await self._broker.request(request, names.DIRECTORY_RPC_SIGN_IN, timeout=self._timeout)
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.errors.ConnectionClosedError,
        ) as exc:
            log.warning("directory sign-in RPC failed: %s", type(exc).__name__)
            raise DirectoryUnavailableError() from exc
        answer = json.loads(reply.body)
        if "error" in answer:
            raise SignInRefusedError(str(answer["error"]), str(answer.get("code") or "sign_in_refused"))
        return DirectoryUser.model_validate(answer)


class EventPublisher:
    """Publishes auth events to JetStream in the background: ``publish`` returns at once, so a sign-in or
    sign-out never waits for the bus. A failed publish is retried (same ``Nats-Msg-Id``: JetStream keeps
    one copy) for ``give_up_after`` seconds; at most ``max_pending`` events wait, beyond that new ones are
    dropped and logged. ``flush`` on shutdown lets pending publishes finish within a grace period."""

    def __init__(
        self,
        broker: NatsBroker,
        timeout: float = 2.0,
        retry_seconds: tuple[float, float] = (0.5, 5.0),
        give_up_after: float = 300.0,
        max_pending: int = 10_000,
    ) -> None:
        self._broker = broker
        self._timeout = timeout
        self._first_retry, self._max_retry = retry_seconds
        self._give_up_after = give_up_after
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def publish(self, event: AuthEvent) -> None:
        reason = (event.reason or "").split(":")[0]  # "refused: <message>" must not explode the label set
        AUTH_EVENTS.labels(event.type, event.method, reason).inc()
        if len(self._tasks) >= self._max_pending:
            log.error(
                "dropping auth event %s %s: %d events wait for the bus",
                event.type,
                event.event_id,
                len(self._tasks),
            )
            return
        task = asyncio.create_task(self._send(event), name=f"auth-event-{event.event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: AuthEvent) -> None:
        deadline = time.monotonic() + self._give_up_after
        delay = self._first_retry
        while True:
            try:
                # To JetStream, waiting for its acknowledgement (one event at a time is plenty here).
                await self._broker.publish(
                    event,
                    names.auth_event_subject(event.type),
                    headers={"Nats-Msg-Id": event.event_id},
                    stream=names.AUTH_EVENTS_STREAM,
                    timeout=self._timeout,
                )
                return
            except Exception as exc:  # the bus is down: the answer to the user did not depend on it
                if time.monotonic() + delay > deadline:
                    log.error("gave up publishing auth event %s %s: %s", event.type, event.event_id, exc)
                    return
                log.warning(
                    "could not publish auth event %s %s (%s); retrying in %.1fs",
                    event.type,
                    event.event_id,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry)

    async def flush(self, grace_seconds: float = 5.0) -> None:
        """On shutdown: let publishes in flight finish (bounded), then cancel the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def publish_jwks(js: JetStreamContext, jwks: dict[str, Any]) -> None:
    kv = await js.key_value(names.AUTH_KEYS_BUCKET)
    await kv.put(JWKS_KEY, json.dumps(jwks).encode())


class RevokedSessionsPublisher:
    """Writes ended sessions to the ``auth_revoked`` bucket, which every verifying service watches.

    ``session_ended`` returns at once: the write runs in the background and is retried while the bus is
    away, so a sign-out never waits for NATS. A write that only lands after ``until`` is dropped (every
    token of the session has expired by then)."""

    def __init__(
        self, js: JetStreamContext, timeout: float = 2.0, retry_seconds: tuple[float, float] = (0.5, 5.0)
    ) -> None:
        self._js = js
        self._timeout = timeout
        self._first_retry, self._max_retry = retry_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def session_ended(self, session_id: str, until: float) -> None:
        task = asyncio.create_task(self._write(session_id, until), name=f"revoke-{session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, session_id: str, until: float) -> None:
        delay = self._first_retry
        value = str(int(until) + 1).encode()  # rounded up: never forgotten before the token expires
        while time.time() < until:
            try:
                kv = await self._js.key_value(names.AUTH_REVOKED_BUCKET)
                await asyncio.wait_for(kv.put(session_id, value), self._timeout)
                if delay != self._first_retry:
                    log.info("ended session %s published after retrying", session_id)
                return
            except Exception as exc:  # the bus is away: keep trying in the background
                log.warning(
                    "could not publish ended session %s (%s); retrying in %.1fs", session_id, exc, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry)
        log.error("gave up publishing ended session %s: its access tokens have expired", session_id)

    async def flush(self, grace_seconds: float = 5.0) -> None:
        """On shutdown: let writes in flight finish (bounded), then cancel the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
