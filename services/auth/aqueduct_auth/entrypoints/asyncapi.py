"""What the auth service does on the bus, for the AsyncAPI document (``tools/asyncapi.py``)."""

from __future__ import annotations

from faststream.nats import JStream, NatsBroker

from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.events import AuthEvent
from aqueduct_libs.rpc import SignInRequest

__all__ = ["auth_broker"]


def auth_broker() -> NatsBroker:
    """The auth service's publishers, never started (it consumes nothing but KV buckets)."""
    broker = new_broker(None, "aqueduct-auth", description="aqueduct-auth: sign-in and sessions")
    broker.publisher(
        f"{names.AUTH_EVENTS_SUBJECT_PREFIX}.*",
        stream=JStream(names.AUTH_EVENTS_STREAM, declare=False),
        schema=AuthEvent,
        title="auth.events.v1.<type>",
        description="Sign-ins, sign-outs and refused attempts (EventPublisher); Nats-Msg-Id is the event id.",
    )
    broker.publisher(
        names.DIRECTORY_RPC_SIGN_IN,
        schema=SignInRequest,
        title=f"{names.DIRECTORY_RPC_SIGN_IN} (auth asks)",
        description="Asks the directory who signed in (DirectoryClient); answered by the directory's handler.",
    )
    return broker
