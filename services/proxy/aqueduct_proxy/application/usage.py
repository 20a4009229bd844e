"""The end of a call: its usage event (built and published off the response path), and what admission
reserved settled against the real usage (budgets, output-token limits) or released when none came."""

from __future__ import annotations

import asyncio
import os
import time

import orjson

from aqueduct_proxy.adapters.limiter import Limiter
from aqueduct_proxy.adapters.publisher import UsagePublisher
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.application.call import Call
from aqueduct_proxy.domain.usage import StreamTally, TokenUsage
from aqueduct_proxy.metrics import ProxyMetrics

__all__ = ["Meter", "UsageRecorder"]


class UsageRecorder:
    def __init__(
        self,
        publisher: UsagePublisher | None,
        limiter: Limiter | None,
        budgeting: Budgeting,
        metrics: ProxyMetrics,
    ) -> None:
        self.publisher = publisher
        self.limiter = limiter
        self.budgeting = budgeting
        self.metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

    def record(
        self,
        call: Call,
        status: int,
        usage: TokenUsage | None,
        *,
        ttft: float | None = None,
        cut_short: bool = False,
        estimated_output: int = 0,
    ) -> None:
        """Publish the usage event (off the response path); settle output-token limits in the background."""
        usage = self._publish_usage(call, status, usage, ttft, cut_short, estimated_output)
        self.budgeting.settle(call, usage)
        if self._settles(call):
            assert self.limiter is not None and call.admission is not None
            task = asyncio.create_task(self.limiter.settle(call.admission, usage.output_tokens))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def finish(
        self,
        call: Call,
        status: int,
        usage: TokenUsage | None,
        *,
        ttft: float | None = None,
        estimated_output: int = 0,
    ) -> None:
        """``record``, with the output tokens settled before the answer ends: the client's next request,
        on whichever replica, then sees them (this is what keeps output-token limits exact)."""
        usage = self._publish_usage(call, status, usage, ttft, False, estimated_output)
        self.budgeting.settle(call, usage)
        if self._settles(call):
            assert self.limiter is not None and call.admission is not None
            await self.limiter.settle(call.admission, usage.output_tokens)

    def _settles(self, call: Call) -> bool:
        return (
            self.limiter is not None
            and call.admission is not None
            and any(c.dimension == "output_tokens" for c in call.admission.counters)
        )

    def _publish_usage(
        self,
        call: Call,
        status: int,
        usage: TokenUsage | None,
        ttft: float | None,
        cut_short: bool,
        estimated_output: int,
    ) -> TokenUsage:
        if usage is None:
            usage = TokenUsage(call.counted_input(), estimated_output, 0)
        grant = call.grant
        latency = time.perf_counter() - call.started
        # The UsageRecorded contract (schema version 1), serialised directly: building and dumping the
        # pydantic model cost ~100 µs per request; tests check the bytes validate as UsageRecorded.
        event_id = os.urandom(16).hex()
        payload = orjson.dumps(
            {
                "schema_version": 1,
                "event_id": event_id,
                "occurred_at": call.occurred_at,
                "kind": "model",
                "token_id": grant.token_id,
                "user_id": grant.user_id,
                "service_account_id": grant.service_account_id,
                "team_id": grant.team_id,
                "org_id": grant.org_id,
                "endpoint": call.route.endpoint.slug if call.route else call.endpoint.slug,
                "model": call.model,
                "route": call.api_path,
                "status_code": status,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cached_tokens": usage.cached_tokens,
                "cache_write_5m_tokens": usage.cache_write_5m_tokens,
                "cache_write_1h_tokens": usage.cache_write_1h_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "alias": call.route.alias if call.route else None,
                "latency_ms": round(latency * 1000, 3),
                "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
                "streamed": call.stream,
                "cut_short": cut_short,
                "request_id": call.request_id,
            }
        )
        if self.publisher is not None:
            self.publisher.record_json(event_id, payload)
        if usage.input_tokens or usage.output_tokens:
            self.metrics.count_tokens(call.model, usage.input_tokens, usage.output_tokens)
        return usage

    def release(self, call: Call) -> None:
        """End a call that produced no usage (refused, failed upstream, abandoned): its budget hold goes.
        Does nothing once the call was recorded."""
        self.budgeting.settle(call, None)

    async def settle(self, call: Call, usage: TokenUsage | None) -> None:
        """Settle a call whose usage event someone else publishes (the batch worker): output-token
        limits and budgets, from the usage the event carries."""
        self.budgeting.settle(call, usage)
        if self._settles(call):
            assert self.limiter is not None and call.admission is not None
            await self.limiter.settle(call.admission, usage.output_tokens if usage else 0)

    async def drain(self) -> None:
        await self.budgeting.drain()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


class Meter:
    """One answer as a relay moves its bytes: which server-sent events reach the client (not the usage
    chunk asked for on the client's behalf), when the first output left, and how the answer ended. Every
    ending records the call's usage event once; an answer that went through whole is settled before
    its last bytes leave (what keeps output-token limits exact), one cut short off the response path."""

    __slots__ = ("_call", "_recorder", "_tally", "ttft")

    def __init__(self, recorder: UsageRecorder, call: Call) -> None:
        self._recorder, self._call = recorder, call
        self._tally: StreamTally | None = None
        self.ttft: float | None = None

    def passes(self, event: bytes) -> bool:
        """Tally one complete server-sent event (usage seen, content chunks); True if it goes to the client."""
        if self._tally is None:
            self._tally = StreamTally(self._call.client_wants_usage)
        return self._tally.observe(event)

    def first_output(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self._call.started

    async def answered(self, status: int, usage: TokenUsage | None) -> None:
        """A whole answer was read (``usage`` as it states it, if any)."""
        await self._recorder.finish(self._call, status, usage)

    def broke_off(self, usage: TokenUsage | None = None) -> None:
        """The upstream broke off a whole answer before it was read: the client gets a 502 (``usage``:
        None for the gateway's own count of the prompt)."""
        self._recorder.record(self._call, 502, usage, cut_short=True)

    def passed(self, status: int, *, cut_short: bool) -> None:
        """A binary answer (audio, images) went through as it came, or was cut short: no usage in it."""
        self._recorder.record(self._call, status, None, cut_short=cut_short)

    async def stream_ended(self, status: int, *, cut_short: bool) -> None:
        """A stream ended, with the usage it reported (else the prompt's count and a chunk per token)."""
        tally = self._tally
        if tally is None:
            await self._ended(status, None, 0, cut_short)
        else:
            await self._ended(status, tally.usage, tally.chunks, cut_short)

    async def translation_ended(
        self, status: int, usage: TokenUsage | None, chunks: int, *, cut_short: bool
    ) -> None:
        """A stream a translation tallied itself ended. Cut short, its usage is provisional (Anthropic's
        message_start says 1 output token): what was relayed is at least that much."""
        if cut_short and usage is not None:
            usage.output_tokens = max(usage.output_tokens, chunks)
        await self._ended(status, usage, chunks, cut_short)

    async def _ended(self, status: int, usage: TokenUsage | None, chunks: int, cut_short: bool) -> None:
        call, ttft = self._call, self.ttft
        if ttft is not None:
            self._recorder.metrics.ttft.labels(call.api_path).observe(ttft)
        if usage is not None and not usage.input_tokens:
            usage.input_tokens = call.counted_input()
        if cut_short:  # nothing waits for the settlement: the answer is over already
            self._recorder.record(call, status, usage, ttft=ttft, cut_short=True, estimated_output=chunks)
        else:
            await self._recorder.finish(call, status, usage, ttft=ttft, estimated_output=chunks)
