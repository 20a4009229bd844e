"""Usage events into JetStream at a steady rate, the way the proxy publishes them; accounting's CPU per event.

Run by ``bench/system.py`` as a process of its own (pinned to the load generator's cores), one rate at a time:

    .venv/bin/python bench/steady_usage.py --nats-url nats://... --rate 500 --seconds 10 --pid 1234

Every ``linger`` (the proxy publisher's, 50 ms) it publishes one message holding the events due since the last
tick (a JSON array of ``UsageRecorded``, at most 100 to a message, a lone event as a bare object; the
``Nats-Msg-Id`` derived from the event ids), a JetStream publish awaiting its acknowledgement, what
``aqueduct_proxy.adapters.publisher`` sends through its FastStream publisher. After a warm-up it reads the CPU time (user + system, all
threads, from ``/proc/<pid>/stat``) of each process given with ``--pid`` at the start and the end of the
measured window, then waits until the accounting consumer has stored and acknowledged everything (its
pending and unacknowledged counts are zero). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
import orjson

from aqueduct_libs import names
from aqueduct_libs.bus import inbox_prefix_of
from aqueduct_proxy.adapters.publisher import UsagePublisher

# The proxy publisher's pace: one round of messages per linger.
TICK = inspect.signature(UsagePublisher).parameters["linger"].default
PER_MESSAGE = 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads) so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _event(prefix: str, i: int, now: datetime) -> dict[str, object]:
    return {
        "schema_version": 1,
        "event_id": f"{prefix}-{i:010d}",
        "occurred_at": now.isoformat(),
        "kind": "model",
        "token_id": f"tok-{i % 300}",
        "user_id": f"user-{i % 100}",
        "service_account_id": None,
        "team_id": f"team-{i % 10}",
        "org_id": "org-bench",
        "endpoint": "fake",
        "model": ("fake-model", "gpt-4o-mini", "gpt-4o")[i % 3],
        "route": "/v1/chat/completions",
        "status_code": 200,
        "input_tokens": 20 + i % 200,
        "output_tokens": 5 + i % 100,
        "cached_tokens": 0,
        "latency_ms": 1.5,
        "ttft_ms": None,
        "streamed": False,
        "cut_short": False,
        "tool": None,
        "batch_id": None,
    }


async def _pending(js, durable: str) -> int:
    info = await js.consumer_info(names.USAGE_STREAM, durable)
    return int(info.num_pending) + int(info.num_ack_pending)


async def run(args: argparse.Namespace) -> dict[str, object]:
    nc = await nats.connect(args.nats_url, name="bench-usage", inbox_prefix=inbox_prefix_of(args.nats_url))
    info_url = args.info_url or args.nats_url
    info_nc = await nats.connect(info_url, name="bench-usage-info", inbox_prefix=inbox_prefix_of(info_url))
    js = info_nc.jetstream()
    inbox = nc.new_inbox()
    acked = 0

    async def on_ack(_msg) -> None:
        nonlocal acked
        acked += 1

    await nc.subscribe(f"{inbox}.*", cb=on_ack)
    prefix = f"{args.prefix}-{uuid.uuid4().hex[:8]}"
    pids = [int(p) for p in args.pid]
    published = 0
    messages = 0
    window: dict[str, float] = {}
    cpu_start: list[float] = []
    cpu_end: list[float] = []
    started = time.perf_counter()
    warm_until = started + args.warmup
    end = warm_until + args.seconds
    in_window_from = -1
    next_tick = started
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if in_window_from < 0 and now >= warm_until:
            in_window_from = published
            window["start"] = now
            cpu_start = [cpu_seconds(p) for p in pids]
        due = int((now - started) * args.rate) - published
        moment = datetime.now(UTC)
        while due > 0:
            count = min(due, PER_MESSAGE)
            events = [_event(prefix, published + k, moment) for k in range(count)]
            payload = orjson.dumps(events if count > 1 else events[0])
            msg_id = f"{prefix}-{published}-{count}"
            await nc.publish(
                names.USAGE_SUBJECT, payload, reply=f"{inbox}.{messages}", headers={"Nats-Msg-Id": msg_id}
            )
            published += count
            messages += 1
            due -= count
        next_tick += args.tick
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    window["end"] = time.perf_counter()
    cpu_end = [cpu_seconds(p) for p in pids]
    in_window = published - max(in_window_from, 0)
    await nc.flush()
    backlog_at_end = await _pending(js, args.durable)
    drain_started = time.perf_counter()
    while await _pending(js, args.durable) > 0:
        if time.perf_counter() - drain_started > args.drain_timeout:
            break
        await asyncio.sleep(0.05)
    drained_after = time.perf_counter() - drain_started
    left = await _pending(js, args.durable)
    await nc.close()
    await info_nc.close()
    seconds = window["end"] - window["start"]
    return {
        "rate": args.rate,
        "achieved_rate": in_window / seconds,
        "events": in_window,
        "seconds": seconds,
        "messages": messages,
        "acked_messages": acked,
        "cpu_seconds": [e - s for s, e in zip(cpu_start, cpu_end, strict=True)],
        "cpu_us_per_event": [
            (e - s) / max(in_window, 1) * 1e6 for s, e in zip(cpu_start, cpu_end, strict=True)
        ],
        "backlog_at_end": backlog_at_end,
        "drained_after": drained_after,
        "left": left,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-url", required=True, help="where to publish (the proxy's NATS user)")
    parser.add_argument("--info-url", default="", help="who reads the consumer's state (default: --nats-url)")
    parser.add_argument("--durable", default="accounting-usage")
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--pid", action="append", default=[], help="a process whose CPU time to read")
    parser.add_argument("--prefix", default="steady")
    parser.add_argument(
        "--tick",
        type=float,
        default=TICK,
        help="seconds between rounds of messages (default: the proxy's linger)",
    )
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
