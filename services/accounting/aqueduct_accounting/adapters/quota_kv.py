"""The quota KV bucket: accounting writes one ``QuotaDecision`` per used-up scope; the proxy watches it."""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.errors import NoKeysError

from aqueduct_libs import names
from aqueduct_libs.snapshot import QuotaDecision

__all__ = ["QuotaBucket"]


class QuotaBucket:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def current(self) -> dict[str, QuotaDecision]:
        kv = await self._js.key_value(names.QUOTA_BUCKET)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return {}
        found: dict[str, QuotaDecision] = {}
        for key in keys:
            with contextlib.suppress(Exception):  # unreadable or just deleted: rewritten or dropped below
                entry = await kv.get(key)
                if entry.value:
                    found[key] = QuotaDecision.model_validate_json(entry.value)
        return found

    async def put(self, key: str, decision: QuotaDecision) -> None:
        kv = await self._js.key_value(names.QUOTA_BUCKET)
        await kv.put(key, decision.model_dump_json().encode())

    async def delete(self, key: str) -> None:
        kv = await self._js.key_value(names.QUOTA_BUCKET)
        await kv.delete(key)
