"""Closed-loop HTTP load for ``bench/system.py``, in a process of its own (pinned to the load cores).

    .venv/bin/python bench/loadgen.py URL KEY --concurrency 32 --seconds 8 [--stream --max-tokens 64]
    .venv/bin/python bench/loadgen.py URL KEY --wrk --concurrency 32 --seconds 8

``concurrency`` workers each send the next chat completion as soon as the last one ended. Plain requests:
requests per second and latency percentiles (p50, p99, p99.9). Streamed (``--stream``): time to the first
chunk (p50, p99) and chunks received per second over all workers. With ``--wrk`` the plain requests come
from ``wrk`` (far less CPU per request than Python) and the percentiles from its histogram. Prints one
JSON object; latencies in milliseconds.

``--realtime`` runs the generator under ``SCHED_FIFO`` (needs root or ``CAP_SYS_NICE``; without it the run
goes on at normal priority and says so: ``"realtime": false``). ``bench/system.py`` uses it for the time
to the first streamed chunk at concurrency 1: the test upstream shares the load generator's core and
writes its 66 chunks in one burst of about a millisecond of CPU. Called directly, each of its writes wakes
the generator on that core and the kernel switches to it at once; through the product, the wake-up comes
from the product's core and the kernel lets the upstream finish its burst first (``perf sched timehist``:
the generator runnable for 0.4 to 0.5 ms behind it), which is not time the product spent. Under
``SCHED_FIFO`` the generator runs as soon as a chunk reaches it, whoever sent it, as a client on its own
machine would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

MODEL = "fake-model"


def body(stream: bool, max_tokens: int) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello there how are you"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * q))]


async def closed_loop(
    url: str, key: str, concurrency: int, seconds: float, stream: bool, max_tokens: int
) -> dict:
    latencies: list[float] = []
    first_chunks: list[float] = []
    chunks = 0
    errors = 0
    payload = json.dumps(body(stream, max_tokens)).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one() -> None:
            nonlocal chunks, errors
            started = time.perf_counter()
            async with session.post(url, data=payload) as answer:
                if answer.status != 200:
                    await answer.read()
                    errors += 1
                    return
                if not stream:
                    await answer.read()
                else:
                    first = True
                    async for line in answer.content:
                        if not line.startswith(b"data: {"):
                            continue
                        if first:
                            first_chunks.append(time.perf_counter() - started)
                            first = False
                        chunks += 1
            latencies.append(time.perf_counter() - started)

        for _ in range(min(20, concurrency * 2)):  # warm up connections and caches
            await one()
        latencies.clear()
        first_chunks.clear()
        chunks, errors = 0, 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    first_chunks.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "errors": errors,
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "p999": percentile(latencies, 0.999) * 1000,
        "ttft_p50": percentile(first_chunks, 0.5) * 1000,
        "ttft_p99": percentile(first_chunks, 0.99) * 1000,
        "chunks_per_s": chunks / elapsed,
        "tool": "python",
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "socket_errors": %d, "status_errors": %d, "p50": %d, "p99": %d, "p999": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def with_wrk(url: str, key: str, concurrency: int, seconds: float, max_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(body(False, max_tokens)), key=key))
        base = ["wrk", "-t1", f"-c{concurrency}", "-s", str(script), url]
        subprocess.run([*base[:2], "-d1s", *base[2:]], capture_output=True, check=True)  # warm-up
        done = subprocess.run(
            [*base[:2], f"-d{max(1, round(seconds))}s", "--timeout", "10s", *base[2:]],
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ok = result["requests"] - result["status_errors"]
    return {
        "requests": ok,
        "rps": ok / (result["duration_us"] / 1e6),
        "errors": result["status_errors"] + result["socket_errors"],
        "p50": result["p50"] / 1000,
        "p99": result["p99"] / 1000,
        "p999": result["p999"] / 1000,
        "tool": "wrk",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=5)
    parser.add_argument("--wrk", action="store_true", help="use wrk (plain requests only)")
    parser.add_argument("--realtime", action="store_true", help="run under SCHED_FIFO (see above)")
    args = parser.parse_args()
    realtime = False
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            realtime = True
        except OSError as exc:
            print(f"--realtime: {exc}; measuring at normal priority", file=sys.stderr)
    if args.wrk and not args.stream and shutil.which("wrk"):
        result = with_wrk(args.url, args.key, args.concurrency, args.seconds, args.max_tokens)
    else:
        result = asyncio.run(
            closed_loop(args.url, args.key, args.concurrency, args.seconds, args.stream, args.max_tokens)
        )
    result["realtime"] = realtime
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
