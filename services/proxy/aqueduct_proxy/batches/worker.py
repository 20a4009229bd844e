"""The batch worker: runs queued lines through the proxy's own gateway (routing, limits, budgets, retries).

Each line: run it (or find its stored result after a crash), store the result in KV with create-once,
publish its usage event (``Nats-Msg-Id`` = the stored event id), then acknowledge. A line killed at any
point is redelivered and ends with exactly one stored result and one usage event; only its upstream call
may have been made twice. A finalizer turns a batch whose queue is empty into its output files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Annotated, Any

import orjson
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.broker.registrator import NatsRegistrator
from faststream.nats.subscriber.usecases.basic import LogicSubscriber
from nats.aio.msg import Msg
from nats.js import api as js_api

from aqueduct_libs import names
from aqueduct_libs.bounds import MAX_TEXT_LENGTH
from aqueduct_libs.broker import OWN_INBOX
from aqueduct_libs.events import UsageRecorded, utcnow
from aqueduct_libs.publishers import Publisher, usage_publisher
from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.application.gateway import Gateway
from aqueduct_proxy.batches.domain import (
    Batch,
    BatchLine,
    BatchNotFoundError,
    LineResult,
    derived_file_id,
    parse_input,
    render_results,
)
from aqueduct_proxy.batches.settings import BatchSettings
from aqueduct_proxy.batches.store import BatchStore
from aqueduct_proxy.domain.access import check_grant
from aqueduct_proxy.domain.errors import (
    InvalidTokenError,
    ProxyError,
    RateLimitedError,
    RequestTooLargeError,
)
from aqueduct_proxy.domain.usage import usage_from_body
from aqueduct_proxy.files.store import FileStore
from aqueduct_proxy.jupyterhub.users import UserGrants

__all__ = ["CONSUMER", "BatchWorker", "RetryLater", "on_batch_line", "subscribe_lines"]

log = logging.getLogger(__name__)

CONSUMER = "batch-workers"  # one durable pull consumer shared by every worker process
LINES = f"{names.BATCH_LINES_SUBJECT_PREFIX}.>"
WORKER = "batch_worker"  # the worker in its broker's context
# A batch still "validating" this long after creation lost its proxy while its lines were being queued.
_STUCK_VALIDATING = 60.0
_USAGE_ACK_TIMEOUT = 5.0  # nats-py's own default for a JetStream publish
_SKIPPED = frozenset({"cancelling", "cancelled", "failed", "expired", "completed"})


class RetryLater(Exception):
    """A limit says not yet: the line goes back to the queue for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class BatchWorker:
    def __init__(
        self,
        store: BatchStore,
        files: FileStore,
        gateway: Gateway,
        settings: BatchSettings,
        broker: NatsBroker,
        users: UserGrants | None = None,
    ) -> None:
        self.broker = broker
        self._usage_publisher = self.declare_publishers(broker)
        self.store = store
        self.files = files
        self.gateway = gateway
        self.settings = settings
        self.users = users or UserGrants()  # fed by a watch of the snapshot's user.* keys
        self._stopping = asyncio.Event()
        # The batches bucket mirrored by a KV watch (key -> record): no lookup per line, and the list
        # the finalizer walks.
        self.batches: dict[str, Batch] = {}
        self._running = 0  # lines being run now
        self._idle = asyncio.Event()
        self._progress: dict[tuple[str, str], list[int]] = defaultdict(
            lambda: [0, 0]
        )  # (owner, id) -> ok, failed
        self._finalizing: set[str] = set()
        # For /readyz and /metrics: bound to the shared consumer; lines acknowledged by this
        # process (done), the ones among them answered with an error (failed).
        self.consuming = False
        self.lines_done = 0
        self.lines_failed = 0

    @staticmethod
    def declare_publishers(broker: NatsBroker) -> Publisher:
        """The worker's one publisher: usage events, one per line (also what the AsyncAPI document shows)."""
        return usage_publisher(
            broker, "batch worker", "one per line, after its result is stored", grouped=False
        )

    # -- consuming lines -------------------------------------------------------------------------------

    async def consume(self) -> None:
        """Run queued lines (``on_batch_line``, up to ``concurrency`` at once) until ``stop``."""
        # Create or update: a changed ack_wait takes effect for every worker of the shared consumer.
        await self.store.js.add_consumer(
            names.BATCH_LINES_STREAM,
            js_api.ConsumerConfig(
                durable_name=CONSUMER,
                filter_subject=LINES,
                ack_policy=js_api.AckPolicy.EXPLICIT,
                ack_wait=self.settings.ack_wait_seconds,
                max_ack_pending=max(10_000, self.settings.concurrency * 4),
                max_deliver=-1,
            ),
        )
        self.broker.context.set_global(WORKER, self)
        subscriber = subscribe_lines(self.broker, self.settings.concurrency, persistent=False)
        await subscriber.start()
        self.consuming = True
        try:
            await self._stopping.wait()
            # No more fetches, and lines fetched but not started are left to their redelivery; the
            # lines being run finish (FastStream's own stop would cancel them after its grace period).
            subscriber.running = False
            await self.drain()
        finally:
            self.consuming = False
            await subscriber.stop()

    @property
    def in_flight(self) -> int:
        return self._running

    def stop(self) -> None:
        """Run no more lines; lines in flight finish (``drain``)."""
        self._stopping.set()

    async def drain(self) -> None:
        while self._running:
            self._idle.clear()
            await self._idle.wait()

    async def handle(self, line: BatchLine, msg: NatsMessage) -> None:
        if self._stopping.is_set():  # dispatched as the worker stops: another worker takes it
            with contextlib.suppress(Exception):
                await msg.nack()
            return
        self._running += 1
        try:
            await self._handle(line, msg.raw_message)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def _handle(self, line: BatchLine, msg: Msg) -> None:
        try:
            async with self._heartbeat(msg):
                batch = self.batches.get(self.store.key(line.owner, line.batch_id))
                if batch is None:  # newer than the mirror
                    try:
                        batch = await self.store.get(line.owner, line.batch_id)
                    except BatchNotFoundError:
                        batch = None
                if batch is None or batch.status in _SKIPPED:
                    await msg.ack()
                    return
                # Only a redelivered line can have a result already (a duplicate is caught by create-once).
                redelivered = msg.metadata.num_delivered > 1
                result = await self.store.result(line.batch_id, line.line) if redelivered else None
                if result is None:
                    result = await self.store.store_result(line.batch_id, await self.run_line(batch, line))
                    self._progress[(batch.owner, batch.id)][0 if result.succeeded else 1] += 1
                # Published after the result is stored and before the ack; again after a crash, same id.
                await self._usage_publisher.publish(
                    result.usage_event.encode(),
                    names.USAGE_SUBJECT,
                    headers={"Nats-Msg-Id": result.usage_event_id},
                    timeout=_USAGE_ACK_TIMEOUT,
                )
                await msg.ack_sync()
                self.lines_done += 1
                self.lines_failed += not result.succeeded
        except RetryLater as wait:
            with contextlib.suppress(Exception):
                await msg.nak(delay=wait.seconds)
        except Exception:
            log.exception("batch line failed; it will be delivered again")
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)

    @contextlib.asynccontextmanager
    async def _heartbeat(self, msg: Msg):  # type: ignore[no-untyped-def]
        async def beat() -> None:
            while True:
                await asyncio.sleep(self.settings.ack_wait_seconds / 3)
                with contextlib.suppress(Exception):
                    await msg.in_progress()

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()

    def grant_of(self, batch: Batch) -> TokenGrant | None:
        """The batch's grant as it is now: its token's, or (JupyterHub token) its user's own; None once
        the token is revoked or the user deactivated."""
        user_id = batch.runs_as_user
        if user_id is not None:
            return self.users.get(user_id)
        return self.gateway.snapshot.grants.get(batch.token_hash)

    async def run_line(self, batch: Batch, line: BatchLine) -> LineResult:
        """One request through the gateway, as the batch's token; every refusal becomes a result."""
        started, occurred_at = time.perf_counter(), utcnow()
        gateway = self.gateway
        call = None
        usage = None
        error: dict[str, Any] | None = None
        status, body = 500, None
        try:
            grant = check_grant(self.grant_of(batch), gateway.snapshot, gateway.config.public_ui_url)
            api_path = line.url
            call = gateway.prepare(grant, api_path, api_path[len("/v1") :], payload=line.body)
            await gateway.admit(call)
            response = await gateway.send(call, "POST", "", {})
            try:
                raw = await response.read()
                status = response.status
            finally:
                response.release()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode(errors="replace")
            usage = usage_from_body(body)
            await gateway.settle(call, usage)  # budgets and output-token limits, as the event says
        except RequestTooLargeError as exc:  # no later retry can pass: the line fails with the reason
            status, error = exc.status, {"code": exc.code or exc.type, "message": exc.message}
        except RateLimitedError as exc:
            raise RetryLater(float(exc.headers.get("Retry-After", "1"))) from exc
        except InvalidTokenError as exc:
            status, error = exc.status, {"code": "token_revoked", "message": exc.message}
        except ProxyError as exc:
            status, error = exc.status, {"code": exc.code or exc.type, "message": exc.message}
        finally:
            if call is not None:
                gateway.release(call)  # refused or failed upstream: nothing stays held
        event = UsageRecorded(
            occurred_at=occurred_at,
            kind="batch",
            batch_id=batch.id,
            token_id=batch.token_id,
            user_id=batch.user_id or batch.owner,
            service_account_id=batch.service_account_id,
            team_id=batch.team_id,
            org_id=batch.org_id,
            endpoint=call.route.endpoint.slug if call is not None and call.route else "",
            # A model the line names but nothing serves is the client's text: kept within the usage bounds.
            model=call.model if call is not None else str(line.body.get("model", ""))[:MAX_TEXT_LENGTH],
            route=line.url,
            status_code=status,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_tokens=usage.cached_tokens if usage else 0,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return LineResult(
            line=line.line,
            custom_id=line.custom_id,
            status_code=status,
            body=body,
            error=error,
            usage_event=event.model_dump_json(),
            usage_event_id=event.event_id,
        )

    # -- progress and finalization ---------------------------------------------------------------------

    def on_batch_put(self, key: str, value: bytes) -> None:
        self.batches[key] = Batch.model_validate_json(value)

    def on_batch_delete(self, key: str) -> None:
        self.batches.pop(key, None)

    async def finalize_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.finalize_interval_seconds)
            try:
                await self._flush_progress()
                for batch in list(self.batches.values()):
                    if batch.status == "validating" and time.time() - batch.created_at > _STUCK_VALIDATING:
                        await self.requeue(batch)
                    elif (
                        batch.status == "in_progress" and batch.expires_at and time.time() > batch.expires_at
                    ):
                        # Past its completion window: what is done goes out, the rest is dropped.
                        await self.store.drop_queued(batch.id)
                        await self.finalize(batch)
                    elif await self._due(batch):
                        await self.finalize(batch)
            except Exception:
                log.exception("batch finalizer pass failed; retrying")

    async def _flush_progress(self) -> None:
        progress, self._progress = self._progress, defaultdict(lambda: [0, 0])
        for (owner, batch_id), (ok, failed) in progress.items():

            def add(b: Batch, ok: int = ok, failed: int = failed) -> Batch | None:
                if b.status not in ("validating", "in_progress", "cancelling"):
                    return None  # the finalizer has the exact numbers
                return b.model_copy(
                    update={
                        "completed": min(b.total, b.completed + ok),
                        "failed": min(b.total, b.failed + failed),
                    }
                )

            await self.store.mutate(owner, batch_id, add)

    async def _due(self, batch: Batch) -> bool:
        if batch.status == "finalizing":
            # Left half-done by a worker that died: take over after a grace period.
            stale = batch.finalizing_at is not None and time.time() - batch.finalizing_at > 30
            return batch.id in self._finalizing or stale
        if batch.status not in ("in_progress", "cancelling"):
            return False
        return await self.store.remaining(batch.id) == 0

    async def requeue(self, batch: Batch) -> None:
        """Queue a stuck batch's lines again. Lines already queued or done are harmless twice: results
        are stored once per line, and the output is built from the results."""
        try:
            data = await self.files.content(batch.owner, batch.input_file_id)
            lines = parse_input(data, batch.id, batch.owner, batch.endpoint, max(batch.total, 1))
        except ProxyError as exc:
            log.warning("batch %s cannot be queued again: %s", batch.id, exc.message)
            await self.store.mutate(
                batch.owner,
                batch.id,
                lambda b: (
                    b.model_copy(update={"status": "failed", "failed_at": int(time.time())})
                    if b.status == "validating"
                    else None
                ),
            )
            return
        await self.store.enqueue(lines)
        await self.store.mutate(
            batch.owner,
            batch.id,
            lambda b: (
                b.model_copy(update={"status": "in_progress", "in_progress_at": int(time.time())})
                if b.status == "validating"
                else None
            ),
        )
        log.info("batch %s: queued its %d lines again after its proxy went away", batch.id, len(lines))

    async def finalize(self, batch: Batch) -> None:
        """Write the output and error files, then mark the batch done. Safe to repeat: the file ids are
        derived from the batch id, so a second attempt overwrites the same files."""
        now = int(time.time())
        if batch.status == "cancelling" or (batch.status == "finalizing" and batch.cancelling_at):
            final: dict[str, Any] = {"status": "cancelled", "cancelled_at": now}
        elif batch.expires_at is not None and now > batch.expires_at:
            final = {"status": "expired", "expired_at": now}
        else:
            final = {"status": "completed", "completed_at": now}

        def start(b: Batch) -> Batch | None:
            if b.status not in ("in_progress", "cancelling", "finalizing"):
                return None
            return b.model_copy(update={"status": "finalizing", "finalizing_at": b.finalizing_at or now})

        batch = await self.store.mutate(batch.owner, batch.id, start)
        if batch.status != "finalizing":
            return
        self._finalizing.add(batch.id)
        results = await self.store.all_results(batch.id)
        output, errors = render_results(batch.id, results)
        update: dict[str, Any] = {
            "completed": sum(r.succeeded for r in results),
            "failed": sum(not r.succeeded for r in results),
        }
        for kind, data in (("output", output), ("error", errors)):
            if data:
                file_id = derived_file_id(batch.id, kind)
                await self.files.save(
                    batch.owner,
                    f"{batch.id}_{kind}.jsonl",
                    "batch_output",
                    data,
                    len(data),
                    file_id=file_id,
                    enforce_quota=False,
                )
                update[f"{kind}_file_id"] = file_id
        update.update(final)

        def finish(b: Batch) -> Batch | None:
            return b.model_copy(update=update) if b.status == "finalizing" else None

        await self.store.mutate(batch.owner, batch.id, finish)
        self._finalizing.discard(batch.id)
        log.info(
            "batch %s %s: %d completed, %d failed",
            batch.id,
            update["status"],
            update["completed"],
            update["failed"],
        )


async def on_batch_line(
    line: BatchLine, msg: NatsMessage, worker: Annotated[BatchWorker, Context(WORKER)]
) -> None:
    """One queued line of a batch: run, store its result, publish its usage, then acknowledge."""
    await worker.handle(line, msg)


def subscribe_lines(
    broker: NatsRegistrator, concurrency: int, *, persistent: bool = True
) -> LogicSubscriber[Msg]:
    """The durable pull consumer every worker process shares, ``concurrency`` lines at once; a line is
    acknowledged (or sent back with a delay) by ``BatchWorker.handle``, never before its work is done."""
    subscriber = broker.subscriber(
        LINES,
        stream=JStream(names.BATCH_LINES_STREAM, declare=False),  # created by ``ensure_topology``
        durable=CONSUMER,
        pull_sub=PullSub(batch_size=concurrency, timeout=1.0),
        max_workers=concurrency,
        ack_policy=AckPolicy.MANUAL,
        inbox_prefix=OWN_INBOX,
        persistent=persistent,
        title="batch lines",
    )
    subscriber(on_batch_line)
    return subscriber  # type: ignore[return-value]
