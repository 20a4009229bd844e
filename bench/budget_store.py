"""Benchmark: the budget store alone against Valkey, one checkout against another in the same run.

Run from the repository root: ``.venv/bin/python bench/budget_store.py [--against ../main]``. Starts one
Valkey (append-only, as ``bench/proxy.py`` runs it) and drives each checkout's ``BudgetStore`` on it in
turn, alternately (``--rounds``), in a child process of its own: per call ``--per-call`` reservations of a
worst case on six counters (user, team, org; day, month), each settled in the next call, as a busy proxy
sends them (``bench/proxy.py`` at concurrency 32 sends five to seven per call). Prints, per checkout, the
medians of Valkey's CPU per reservation (its own ``used_cpu_*``), Valkey's time per script call
(``commandstats``) and the driving process's CPU per reservation (the store's Python, the client's
encoding and parsing, and the driver's own loop): CPU figures that other load on the machine moves much
less than throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process with the checkout's libs and proxy first on sys.path (its own code, whatever
# this environment has installed).
_DRIVER = """
import asyncio, json, sys, time
checkout, url, per_call, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path[:0] = [checkout + "/libs", checkout + "/services/proxy"]
from datetime import UTC, datetime
import redis
from aqueduct_libs.snapshot import BudgetRule
from aqueduct_proxy.adapters.budget_store import BudgetHold, BudgetStore
from aqueduct_proxy.adapters.resp import RespClient
from aqueduct_proxy.domain.budgets import budget_counters

def valkey_cpu(r):
    info = r.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]

async def main():
    r = redis.Redis.from_url(url)
    r.flushall()
    high = 10**15
    rules = [
        BudgetRule(scope=s, scope_id=s[0] + "-bench", daily_nanos=high, monthly_nanos=high,
                   daily_tokens=high, monthly_tokens=high)
        for s in ("user", "team", "org")
    ]
    counters = budget_counters(rules, datetime.now(UTC))
    client = RespClient(url, timeout=2.0)
    await client.execute("PING")
    store = BudgetStore(client)
    holds = []

    async def call():
        nonlocal holds
        for hold in holds:
            store.settle_nowait(hold, 12_345, 25)
        sent = [store.reserve_nowait(counters, 999_999, 4_096) for _ in range(per_call)]
        holds = [await store.reserved(s) for s in sent]
        assert all(isinstance(h, BudgetHold) for h in holds)

    for _ in range(200):
        await call()
    r.config_resetstat()
    cpu, valkey = time.process_time(), valkey_cpu(r)
    for _ in range(calls):
        await call()
    cpu, valkey = time.process_time() - cpu, valkey_cpu(r) - valkey
    stats = r.info("commandstats")["cmdstat_evalsha"]
    for hold in holds:
        await store.settle(hold, 0, 0)
    await client.close()
    n = per_call * calls
    print(json.dumps({"valkey_us": valkey / n * 1e6, "script_us": stats["usec_per_call"],
                      "driver_us": cpu / n * 1e6}))

asyncio.run(main())
"""


def run(checkout: Path, url: str, per_call: int, calls: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(checkout), url, str(per_call), str(calls)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", type=Path, help="another checkout to measure alternately with this one")
    parser.add_argument("--per-call", type=int, default=6, help="reservations (and settlements) per call")
    parser.add_argument("--reservations", type=int, default=24_000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "services" / "cli")]
    from aqueduct_cli.embedded import EmbeddedValkey

    checkouts = [ROOT] + ([args.against.resolve()] if args.against else [])
    results: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-") as tmp:
        valkey = EmbeddedValkey(Path(tmp) / "valkey").start()
        try:
            for _ in range(args.rounds):
                for checkout in checkouts:
                    calls = max(1, args.reservations // args.per_call)
                    results[checkout].append(run(checkout, valkey.url, args.per_call, calls))
        finally:
            valkey.stop()
    print(
        f"{args.per_call} reservations per call, six counters each, {args.rounds} alternated rounds (medians):\n"
    )
    print(
        "| checkout | Valkey CPU-µs per reservation | Valkey µs per script call | driver CPU-µs per reservation |"
    )
    print("|---|---:|---:|---:|")
    for checkout, rows in results.items():
        median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        print(
            f"| {checkout} | {median['valkey_us']:.1f} | {median['script_us']:.1f} | {median['driver_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
