"""The proxy's auth snapshot in the NATS KV bucket, kept equal to what the read model implies.

``desired`` is the whole snapshot as the directory computes it; ``published`` is what the bucket holds.
Commands mark keys dirty, ``flush`` writes only the differences. A write that fails (bus down) leaves
its key pending, so the next flush retries it; a replay recomputes everything and deletes stale keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel

from aqueduct_directory.adapters.background import WokenByCommits
from aqueduct_directory.adapters.metrics import SNAPSHOT_POSITION, SNAPSHOT_WRITES
from aqueduct_directory.application.base import DirectoryCore
from aqueduct_directory.domain.grants import (
    budget_rule,
    budget_rules,
    endpoint_route,
    mcp_route,
    model_route,
    token_grant,
    user_grant,
)
from aqueduct_directory.domain.state import DirectoryState
from aqueduct_libs import names
from aqueduct_libs.bus import read_bucket
from aqueduct_libs.events import utcnow
from aqueduct_libs.snapshot import SnapshotMeta

__all__ = ["SnapshotProjector", "compute_snapshot"]

log = logging.getLogger(__name__)

CONCURRENCY = 1000
# How long a chunk of puts may wait for its acknowledgements: 2 s, and more for a large chunk (a full
# replay). Short, because on a NATS cluster a put waits while the bucket's stream elects a new leader
# (4 to 9 s after one dies): a short wait and a quick retry land the change right after the election.
ACK_TIMEOUT = 2.0
ACKS_PER_SECOND = 500
# The longest pause between two attempts while the bus is away.
RETRY_CAP = 1.0
YIELD_EVERY = 2000


def _encode(entry: BaseModel) -> bytes:
    # Defaults left out (readers parse with the same models): 40% smaller, so faster to load.
    return entry.model_dump_json(exclude_defaults=True).encode()


def compute_snapshot(state: DirectoryState) -> dict[str, bytes]:
    """Every key of the snapshot but ``meta``, from a read model alone (what a replay produces)."""
    snapshot: dict[str, bytes] = {}
    for token in state.tokens.values():
        grant = token_grant(state, token)
        if grant is not None:
            snapshot[names.snapshot_token_key(grant.token_hash)] = _encode(grant)
    for user_id in state.users:
        snapshot.update(_user_entry(state, user_id))
    snapshot.update(_catalog(state))
    snapshot.update(_budgets(state))
    return snapshot


def _budgets(state: DirectoryState) -> dict[str, bytes]:
    return {names.snapshot_budget_key(r.scope, r.scope_id): _encode(r) for r in budget_rules(state)}


def _user_entry(state: DirectoryState, user_id: str) -> dict[str, bytes]:
    """``{user.<id>: grant}`` for an active user, ``{}`` for a deactivated or unknown one."""
    user = state.users.get(user_id)
    grant = user_grant(state, user) if user is not None else None
    return {names.snapshot_user_key(user_id): _encode(grant)} if grant is not None else {}


def _catalog(state: DirectoryState) -> dict[str, bytes]:
    entries: dict[str, bytes] = {}
    for endpoint in state.endpoints.values():
        if not endpoint.deleted:
            entries[names.snapshot_endpoint_key(endpoint.slug)] = _encode(endpoint_route(endpoint))
    for model in state.models.values():
        if not model.deleted:
            entries[names.snapshot_model_key(model.name)] = _encode(model_route(model))
    for server in state.mcp_servers.values():
        if not server.deleted:
            entries[names.snapshot_mcp_key(server.name)] = _encode(mcp_route(server))
    return entries


class SnapshotProjector(WokenByCommits):
    task_name = "snapshot-projector"

    def __init__(
        self,
        app: DirectoryCore,
        js: JetStreamContext,
        clock: Callable[[], datetime] = utcnow,
        push: Callable[[str, bytes | None], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._app = app
        self._js = js
        self._push = push  # also publishes each change as a plain message (aqueduct_libs.snapshot_push)
        self._bucket: KeyValue | None = None
        self._clock = clock
        self._prefix = f"$KV.{names.AUTH_SNAPSHOT_BUCKET}."  # the subjects a KV bucket stores its keys under
        self._state: DirectoryState | None = None
        self.desired: dict[str, bytes] = {}
        self._token_keys: dict[str, str] = {}  # token id -> its key, to delete the old key on regenerate
        self._catalog_keys: set[str] = set()
        self.published: dict[str, bytes] = {}
        self._pending: set[str] = set()
        self._meta_position = -1
        self.loaded = asyncio.Event()  # the bucket equals the read model at least once
        self._lock = asyncio.Lock()  # one writer at a time: a replay may run beside the loop

    # -- computing ---------------------------------------------------------------------------------

    async def _recompute_all(self, state: DirectoryState) -> None:
        state.take_dirty()
        state.take_dirty_budgets()
        self._state = state
        self._token_keys = {}
        new: dict[str, bytes] = {}
        for count, token_id in enumerate(list(state.tokens)):
            grant = token_grant(state, state.tokens[token_id])
            if grant is not None:
                key = names.snapshot_token_key(grant.token_hash)
                new[key] = _encode(grant)
                self._token_keys[token_id] = key
            if count % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        for count, user_id in enumerate(list(state.users)):
            new.update(_user_entry(state, user_id))
            if count % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        catalog = _catalog(state)
        self._catalog_keys = set(catalog)
        new.update(catalog)
        new.update(_budgets(state))
        self._pending |= set(self.desired) | set(new) | set(self.published)
        self.desired = new

    async def _recompute_dirty(self) -> None:
        state = self._app.state
        if state is not self._state:
            await self._recompute_all(state)  # a replay swapped the read model
            return
        tokens, users, catalog, everything = state.take_dirty()
        if everything:
            tokens, users = set(state.tokens), set(state.users)
        for count, token_id in enumerate(tokens):
            old_key = self._token_keys.pop(token_id, None)
            if old_key is not None:
                self.desired.pop(old_key, None)
                self._pending.add(old_key)
            grant = token_grant(state, state.tokens[token_id]) if token_id in state.tokens else None
            if grant is not None:
                key = names.snapshot_token_key(grant.token_hash)
                self.desired[key] = _encode(grant)
                self._token_keys[token_id] = key
                self._pending.add(key)
            # Org-wide changes touch every token: let HTTP requests in between (their events are marked
            # dirty again and picked up by the next flush).
            if count % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        for count, user_id in enumerate(users):
            key = names.snapshot_user_key(user_id)
            entry = _user_entry(state, user_id)
            if entry:
                self.desired.update(entry)
            else:
                self.desired.pop(key, None)  # deactivated: the key is deleted
            self._pending.add(key)
            if count % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        for scope, scope_id in state.take_dirty_budgets():
            key = names.snapshot_budget_key(scope, scope_id)
            rule = budget_rule(state, scope, scope_id)
            if rule is not None:
                self.desired[key] = _encode(rule)
            else:
                self.desired.pop(key, None)  # no budget (any more): the key is deleted
            self._pending.add(key)
        if catalog:
            entries = _catalog(state)
            for key in self._catalog_keys - set(entries):
                self.desired.pop(key, None)
            self.desired.update(entries)
            self._pending |= self._catalog_keys | set(entries)
            self._catalog_keys = set(entries)

    # -- writing -----------------------------------------------------------------------------------

    async def _kv(self) -> KeyValue:
        # Looked up once: each lookup asks the stream's leader, which a cluster may be re-electing.
        if self._bucket is None:
            self._bucket = await self._js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        return self._bucket

    async def load(self) -> None:
        """Start from what the bucket holds now, then make it equal to the read model (a replay)."""
        async with self._lock:
            self.published = await read_bucket(self._js, names.AUTH_SNAPSHOT_BUCKET)
            self.published.pop(names.SNAPSHOT_META_KEY, None)
            await self._recompute_all(self._app.state)
            self._meta_position = -1
            await self._flush()
        self.loaded.set()

    async def flush(self) -> int:
        """Write the differences; returns how many keys changed in the bucket."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        await self._recompute_dirty()
        kv = await self._kv()
        changed = 0
        keys = sorted(self._pending)
        for start in range(0, len(keys), CONCURRENCY):
            chunk = [
                k for k in keys[start : start + CONCURRENCY] if self.desired.get(k) != self.published.get(k)
            ]
            await self._write(kv, chunk)
            changed += len(chunk)
            self._pending.difference_update(keys[start : start + CONCURRENCY])
        position = self._state.position if self._state else 0
        if position != self._meta_position:
            meta = SnapshotMeta(notification_id=position, written_at=self._clock())
            await kv.put(names.SNAPSHOT_META_KEY, meta.model_dump_json().encode())
            self._meta_position = position
            SNAPSHOT_POSITION.set(position)
        return changed

    async def _write(self, kv: KeyValue, keys: list[str]) -> None:
        # Puts are pipelined (publish now, collect the acks after): twice the rate of one kv.put at a time.
        puts = [k for k in keys if self.desired.get(k) is not None]
        if self._push is not None:  # first, and again on every retry: the proxies need no bucket leader
            for key in keys:
                await self._push(key, self.desired.get(key))

        async def put_all() -> list[Any]:
            # No stall timeout per publish: it would yield after every message and send them one by one.
            acks = [await self._js.publish_async(f"{self._prefix}{key}", self.desired[key]) for key in puts]
            return await asyncio.gather(*acks, return_exceptions=True)

        for result in await asyncio.wait_for(put_all(), max(ACK_TIMEOUT, len(puts) / ACKS_PER_SECOND)):
            if isinstance(result, BaseException):
                raise result
        for key in puts:
            self.published[key] = self.desired[key]
        SNAPSHOT_WRITES.labels("put").inc(len(puts))
        for key in keys:
            if self.desired.get(key) is None:
                await kv.delete(key)
                self.published.pop(key, None)
                SNAPSHOT_WRITES.labels("delete").inc()

    # -- running -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                self._wake.clear()
                if self.loaded.is_set():
                    await self.flush()
                else:
                    await self.load()
                delay = 0.2
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=30)
                except TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # bus down: pending keys stay pending, the proxy keeps its copy
                log.warning("snapshot projection could not write (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
