"""The CPU a steady stream of inserts costs chDB with usage_events' merge policy and with the engine's default.

    .venv/bin/python bench/clickhouse_merges.py [--inserts 300] [--rows 500] [--bulk 160000]

Each policy gets a fresh, migrated chDB (``migrate_and_repair``; the reference with the engine's
``merge_selector_base``) in one process and one run, alternately. Two cases, as accounting meets them: a
month's partition growing from empty under a steady stream, and the same stream after a bulk (a load of
``--bulk`` events, then a pause). Every insert is one part of ``--rows`` rows, 0.15 s apart; the CPU counted
is this process's (all threads: the inserts and the merges they cause), per insert, with the active parts
left at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aqueduct_accounting.adapters.clickhouse import ClickHouse, embedded_dsn
from aqueduct_accounting.application.self_repair import MERGE_SELECTOR_BASE, migrate_and_repair
from aqueduct_accounting.settings import default_migrations_dir

TABLE = "usage_events"


def rows(first: int, count: int) -> list[dict[str, object]]:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.000")
    return [
        {
            "event_id": f"m-{i:010d}",
            "occurred_at": now,
            "token_id": f"tok-{i % 3000}",
            "user_id": f"user-{i % 1000}",
            "team_id": f"team-{i % 50}",
            "org_id": f"org-{i % 5}",
            "endpoint": "local",
            "model": "gpt-4o-mini",
            "route": "/v1/chat/completions",
            "status_code": 200,
            "input_tokens": 100 + i % 400,
            "output_tokens": 20 + i % 300,
            "cost_nanos": 1000 + i % 997,
        }
        for i in range(first, first + count)
    ]


def parts(engine: ClickHouse) -> int:
    return int(
        engine.query(f"SELECT count() FROM system.parts WHERE table = '{TABLE}' AND active").rows[0][0]
    )


def run(base: float | None, inserts: int, size: int, bulk: int) -> tuple[float, int]:
    folder = Path(tempfile.mkdtemp(prefix="aqueduct-bench-"))
    engine = ClickHouse(embedded_dsn(folder / "chdb"))
    try:
        migrate_and_repair(engine, default_migrations_dir(), merge_selector_base=base)
        next_id = 0
        for _ in range(0, bulk, 4000):
            engine.insert_json_rows(TABLE, rows(next_id, 4000))
            next_id += 4000
        if bulk:
            time.sleep(8)  # the bulk's own merges
        batches = [rows(next_id + n * size, size) for n in range(inserts)]
        started = time.process_time()
        for batch in batches:
            engine.insert_json_rows(TABLE, batch)
            time.sleep(0.15)
        time.sleep(3)
        return (time.process_time() - started) * 1000 / inserts, parts(engine)
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=300)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--bulk", type=int, default=160_000)
    args = parser.parse_args()
    logging.getLogger("aqueduct_accounting").setLevel(logging.ERROR)  # "tables created at this start"
    print(
        f"\n## A steady stream of inserts into chDB: {args.inserts} inserts of {args.rows} rows "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f})\n"
    )
    print("| case | merge policy | CPU-ms per insert (merges included) | active parts at the end |")
    print("|---|---|---:|---:|")
    policies = [
        (f"merge_selector_base {MERGE_SELECTOR_BASE:g} (accounting's)", MERGE_SELECTOR_BASE),
        ("the engine's default (5)", None),
    ]
    for case, bulk in (("from empty", 0), (f"after a bulk of {args.bulk:,} rows", args.bulk)):
        for label, base in policies:
            cpu, left = run(base, args.inserts, args.rows, bulk)
            print(f"| {case} | {label} | {cpu:.1f} | {left} |", flush=True)


if __name__ == "__main__":
    main()
