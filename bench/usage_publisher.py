"""The proxy's usage publisher alone: its CPU per event (record, journal, publish, acknowledgement).

Run from the repository root: ``.venv/bin/python bench/usage_publisher.py``. An embedded NATS server with
the product's streams; a ``UsagePublisher`` on a started broker, as the proxy wires it, fed a steady stream
(1,000 events every 10 ms, pre-serialised as the proxy's hot path does) until it has published
``--events``; the CPU time of this process (not the NATS server's) divided by the events. Measured with
events grouped as the proxy sends them (100 to a message) and one event to a message (the publish and its
acknowledgement per event: the cost of the publish path itself). Prints the median of ``--rounds`` runs.
To compare two versions, run it in a worktree of each, alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services" / "cli"), str(ROOT / "libs"), str(ROOT / "services" / "proxy")]

from aqueduct_cli.embedded import EmbeddedNats  # noqa: E402
from aqueduct_libs.broker import new_broker  # noqa: E402
from aqueduct_libs.bus import ensure_topology  # noqa: E402
from aqueduct_proxy.adapters.publisher import UsagePublisher  # noqa: E402

PAYLOAD = (
    b'{"event_id":"%s","kind":"chat","token_id":"t","user_id":"u","team_id":"t","org_id":"o",'
    b'"model":"m","prompt_tokens":5,"completion_tokens":5}'
)


async def cpu_per_event(url: str, per_message: int, events: int, spool: Path) -> float:
    broker = new_broker(url, "bench-usage-publisher")
    await broker.start()
    total = -(-events // 1000) * 1000
    delivered = asyncio.Event()

    def on_published(_count: int) -> None:
        if publisher.published >= total:
            delivered.set()

    publisher = UsagePublisher(
        broker, spool, events_per_message=per_message, max_buffered=10**7, on_published=on_published
    )
    await publisher.start()
    cpu = time.process_time()
    for _ in range(total // 1000):
        for _ in range(1000):
            event_id = uuid.uuid4().hex
            publisher.record_json(event_id, PAYLOAD % event_id.encode())
        await asyncio.sleep(0.01)
    await delivered.wait()
    cpu = time.process_time() - cpu
    await publisher.stop()
    await broker.stop()
    return cpu / total * 1e6


async def main(events: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="aqueduct-bench-usage-"))
    nats = EmbeddedNats(folder / "nats").start()
    try:
        setup = new_broker(nats.url, "bench-setup")
        await setup.start()
        await ensure_topology(setup.connection.jetstream(), 1)
        await setup.stop()
        for per_message, count in ((100, events), (1, events // 2)):
            runs = [
                await cpu_per_event(nats.url, per_message, count, folder / f"spool-{per_message}-{i}")
                for i in range(rounds)
            ]
            shown = ", ".join(f"{r:.2f}" for r in runs)
            print(
                f"{per_message} event(s) to a message: {statistics.median(runs):.2f} CPU-µs per event ({shown})"
            )
    finally:
        nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.rounds))
