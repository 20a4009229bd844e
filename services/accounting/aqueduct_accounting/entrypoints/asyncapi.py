"""What accounting does on the bus, for the AsyncAPI document (``tools/asyncapi.py``)."""

from __future__ import annotations

from faststream.nats import NatsBroker

from aqueduct_accounting.bootstrap import asyncapi_broker

__all__ = ["accounting_broker"]


def accounting_broker() -> NatsBroker:
    """Accounting's broker with its two durable pull subscribers, as ``bootstrap`` declares them, never
    started."""
    return asyncapi_broker()
