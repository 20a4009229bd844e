"""One insert of usage rows into chDB, by each path the adapter could take, in one process and one run.

    .venv/bin/python bench/clickhouse_insert.py [--repeat 40]

Rows are made as the consumer makes them (``usage_rows_from_json``, priced). Paths, interleaved, each
into the migrated ``usage_events`` (its roll-up view runs too):

- the adapter before issue 16: a chDB session, the rows as JSONEachRow in the statement's text;
- the adapter now: clickhouse-connect's ``raw_insert`` as JSONEachRow, with the dedup token;
- clickhouse-connect's ``command`` with the JSONEachRow rows as its data;
- clickhouse-connect's ``insert``, column-oriented (Native), the timestamps parsed to ``datetime``.

Prints the median wall time and CPU time (this process, all threads) of one insert of 25 and of 1,000 rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from aqueduct_accounting.adapters.clickhouse import ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.domain.usage import usage_rows_from_json
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_libs.events import UsageRecorded

TABLE = "usage_events"


class Rows:
    def __init__(self) -> None:
        self.next = 0

    def make(self, count: int) -> list[dict[str, Any]]:
        rows = []
        for i in range(self.next, self.next + count):
            event = UsageRecorded(
                event_id=f"m-{i:09d}",
                occurred_at=datetime.now(UTC),
                token_id=f"tok-{i % 3000}",
                user_id=f"user-{i % 1000}",
                team_id=f"team-{i % 50}",
                org_id=f"org-{i % 5}",
                endpoint="local",
                model="gpt-4o-mini",
                route="/v1/chat/completions",
                status_code=200,
                input_tokens=100 + i % 400,
                output_tokens=20 + i % 300,
            )
            row = usage_rows_from_json(event.model_dump_json().encode())[0]
            row["cost_nanos"] = 1000 + i % 997
            rows.append(row)
        self.next += count
        return rows


def paths(folder: Path) -> tuple[dict[str, Callable[[list[dict[str, Any]]], None]], Callable[[], None]]:
    from chdb import session as chdb_session

    adapter = ClickHouse(embedded_dsn(folder))
    apply_migrations(adapter, default_migrations_dir())
    session = chdb_session.Session(str(folder.resolve()) + "?memory_worker_period_ms=5000")
    client = adapter._client()  # the adapter's own clickhouse-connect client, for the library's other paths
    token = "0" * 64

    def before(rows: list[dict[str, Any]]) -> None:
        session.query(f"INSERT INTO {TABLE} FORMAT JSONEachRow\n{orjson.dumps(rows).decode()}")

    def now(rows: list[dict[str, Any]]) -> None:
        adapter.insert_json_rows(TABLE, rows, dedup_token=token)

    def command(rows: list[dict[str, Any]]) -> None:
        client.command(f"INSERT INTO {TABLE} FORMAT JSONEachRow", data=orjson.dumps(rows))

    def columns(rows: list[dict[str, Any]]) -> None:
        names = list(rows[0])
        at = names.index("occurred_at")
        data = [list(row.values()) for row in rows]
        for values in data:
            values[at] = datetime.fromisoformat(values[at])
        client.insert(TABLE, data, column_names=names, settings={"insert_deduplication_token": token})

    def close() -> None:
        session.close()
        adapter.close()

    return {
        "before: chDB session, JSONEachRow in the statement": before,
        "now: clickhouse-connect raw_insert, JSONEachRow": now,
        "clickhouse-connect command with data, JSONEachRow": command,
        "clickhouse-connect insert, column-oriented (Native)": columns,
    }, close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    source = Rows()
    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-") as folder:
        inserts, close = paths(Path(folder) / "chdb")
        try:
            print(
                f"\n## One insert into chDB ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})\n"
            )
            print("| path | 25 rows: wall / CPU (ms) | 1,000 rows: wall / CPU (ms) |")
            print("|---|---:|---:|")
            figures: dict[str, list[str]] = {label: [] for label in inserts}
            for size in (25, 1000):
                batches = {label: [source.make(size) for _ in range(args.repeat)] for label in inserts}
                wall: dict[str, list[float]] = {label: [] for label in inserts}
                cpu: dict[str, list[float]] = {label: [] for label in inserts}
                for n in range(args.repeat):
                    for label, insert in inserts.items():
                        started, cpu_started = time.perf_counter(), time.process_time()
                        insert(batches[label][n])
                        cpu[label].append((time.process_time() - cpu_started) * 1000)
                        wall[label].append((time.perf_counter() - started) * 1000)
                for label in inserts:
                    skip = min(3, args.repeat - 1)
                    figures[label].append(
                        f"{statistics.median(wall[label][skip:]):.1f} / {statistics.median(cpu[label][skip:]):.1f}"
                    )
            for label, cells in figures.items():
                print(f"| {label} | {' | '.join(cells)} |")
        finally:
            close()


if __name__ == "__main__":
    main()
