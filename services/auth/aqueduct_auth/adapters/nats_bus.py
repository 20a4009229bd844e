"""The auth service on the bus: the directory's sign-in RPC, auth events, and the JWKS in KV."""

from __future__ import annotations

import json
import logging
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import Counter

from aqueduct_auth.domain.errors import DirectoryUnavailableError, SignInRefusedError
from aqueduct_auth.domain.sign_in import DirectoryUser, SignInRequest
from aqueduct_libs import names
from aqueduct_libs.events import AuthEvent
from aqueduct_libs.sessions import JWKS_KEY

__all__ = ["DirectoryClient", "EventPublisher", "publish_jwks"]

log = logging.getLogger(__name__)

# Every auth event passes through the publisher, so it is the one place to count them.
AUTH_EVENTS = Counter(
    "aqueduct_auth_events_total",
    "Sign-ins, sign-outs and failed sign-in attempts",
    ["type", "method", "reason"],
)


class DirectoryClient:
    """Asks the directory to resolve or provision a signed-in user (``directory.rpc.v1.sign_in``)."""

    def __init__(self, nc: NATS, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout

    async def sign_in(self, request: SignInRequest) -> DirectoryUser:
        try:
            reply = await self._nc.request(
                names.DIRECTORY_RPC_SIGN_IN, request.model_dump_json().encode(), timeout=self._timeout
            )
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.errors.ConnectionClosedError,
        ) as exc:
            log.warning("directory sign-in RPC failed: %s", type(exc).__name__)
            raise DirectoryUnavailableError() from exc
        answer = json.loads(reply.data)
        if "error" in answer:
            raise SignInRefusedError(str(answer["error"]))
        return DirectoryUser.model_validate(answer)


class EventPublisher:
    """Publishes auth events to JetStream. A failure is logged, never fails the sign-in it records."""

    def __init__(self, js: JetStreamContext, timeout: float = 2.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, event: AuthEvent) -> None:
        reason = (event.reason or "").split(":")[0]  # "refused: <message>" must not explode the label set
        AUTH_EVENTS.labels(event.type, event.method, reason).inc()
        try:
            await self._js.publish(
                names.auth_event_subject(event.type),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": event.event_id},
                timeout=self._timeout,
            )
        except Exception as exc:  # the bus is down: the answer to the user must not depend on it
            log.warning("could not publish auth event %s %s: %s", event.type, event.event_id, exc)


async def publish_jwks(js: JetStreamContext, jwks: dict[str, Any]) -> None:
    kv = await js.key_value(names.AUTH_KEYS_BUCKET)
    await kv.put(JWKS_KEY, json.dumps(jwks).encode())
