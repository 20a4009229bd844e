"""Benchmark: the proxy's own CPU for budgets, per request, one checkout against another in the same run.

Run from the repository root: ``.venv/bin/python bench/budgeting.py [--against ../main]``. Drives each
checkout's ``Budgeting`` (worst case, reservation, answer, settlement) with its ``BudgetStore`` and its
RESP client, as the proxy's request path does, ``--per-call`` requests per turn of the event loop (one
script call per turn; ``bench/proxy.py`` at concurrency 32 sends about five per call), each settled in the
next turn. Valkey is replaced by a transport that answers every call at once with the reply the budget
script gives when all are admitted: what is measured is Python only (building, encoding, parsing,
bookkeeping), without the socket or Valkey, so the figure hardly moves with other load on the machine.
Prints, per checkout, the median over ``--rounds`` of the CPU-µs per request above a turn that builds the
same calls without budgets. Valkey's own CPU per reservation is ``bench/budget_store.py``'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process with the checkout's libs and proxy first on sys.path (its own code).
_DRIVER = """
import asyncio, json, sys, time
from types import SimpleNamespace
checkout, per_call, turns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path[:0] = [checkout + "/libs", checkout + "/services/proxy"]
from aqueduct_libs.pricing import Price
from aqueduct_libs.snapshot import BudgetRule, Limits, TokenGrant
from aqueduct_proxy.adapters import resp
from aqueduct_proxy.adapters.budget_store import BudgetStore
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.application.call import Call
from aqueduct_proxy.domain.access import Route
from aqueduct_proxy.domain.usage import TokenUsage
from aqueduct_proxy.metrics import ProxyMetrics

high = 10**15
rules = [
    BudgetRule(scope=s, scope_id=s[0] + "-bench", daily_nanos=high, monthly_nanos=high,
               daily_tokens=high, monthly_tokens=high)
    for s in ("user", "team", "org")
]
price = Price(150, 600)
snapshot = SimpleNamespace(budgets={"team.t-bench": rules[1]}, budgets_version=1,
                           budgets_of=lambda grant: rules, prices=SimpleNamespace(price_for=lambda m: price))
grant = TokenGrant(token_id="bench", token_hash="h", name="bench", user_id="u-bench", team_id="t-bench",
                   org_id="o-bench", limits=Limits())
endpoint = SimpleNamespace(slug="local")
route = Route("gpt-test", "fake-model", endpoint)
payload = {"model": "gpt-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
# What the script answers when every reservation is admitted: 1 each, then the six counters' figures.
COUNTED = b"*12\\r\\n" + b":1234567890123\\r\\n" * 12


class Answering:
    \"\"\"A transport that answers each write at the next turn of the loop, as if Valkey had.\"\"\"

    def __init__(self, protocol):
        self.protocol = protocol

    def write(self, data):
        reply = b""
        for command in data.split(b"$7\\r\\nEVALSHA\\r\\n")[1:]:  # one reply per call in the write
            admitted = command.count(b"$1\\r\\nr\\r\\n")  # the reservations in the call
            reply += b"*%d\\r\\n" % (admitted + 1) + b":1\\r\\n" * admitted + COUNTED
        asyncio.get_running_loop().call_soon(self.protocol.data_received, reply)

    def close(self):
        pass


async def main():
    client = resp.RespClient("redis://127.0.0.1:1/0", timeout=2.0)
    protocol = resp._Protocol(client._before_flush)
    protocol.transport = Answering(protocol)
    client._protocol = protocol
    budgeting = Budgeting(snapshot, BudgetStore(client), ProxyMetrics())
    usage = TokenUsage(12, 5, 0)
    previous = []

    def calls():
        made = []
        for _ in range(per_call):
            call = Call(grant, "/v1/chat/completions", "/chat/completions", endpoint, route=route,
                        payload=payload)
            call.input_tokens, call.reserved_output = 12, 5
            made.append(call)
        return made

    async def turn():
        nonlocal previous
        for call in previous:
            budgeting.settle(call, usage)
        made = calls()
        reservations = [budgeting.begin(call) for call in made]
        for call, reservation in zip(made, reservations):
            await budgeting.complete(call, reservation)
        previous = made

    async def plain():
        calls()
        await asyncio.sleep(0)

    for _ in range(300):
        await turn()
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(turns):
            await plain()
        base = time.process_time() - started
        started = time.process_time()
        for _ in range(turns):
            await turn()
        rounds.append((time.process_time() - started - base) / (turns * per_call) * 1e6)
    print(json.dumps({"us": sorted(rounds)[2]}))


asyncio.run(main())
"""


def run(checkout: Path, per_call: int, turns: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(checkout), str(per_call), str(turns)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out.splitlines()[-1])["us"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", type=Path, help="another checkout to measure alternately with this one")
    parser.add_argument("--per-call", type=int, default=5, help="requests per turn (one script call)")
    parser.add_argument("--requests", type=int, default=10_000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    checkouts = [ROOT] + ([args.against.resolve()] if args.against else [])
    results: dict[Path, list[float]] = {c: [] for c in checkouts}
    turns = max(1, args.requests // args.per_call)
    for _ in range(args.rounds):
        for checkout in checkouts:
            results[checkout].append(run(checkout, args.per_call, turns))
    print(f"{args.per_call} requests per call, {args.rounds} alternated rounds (medians):\n")
    print("| checkout | budgets' proxy CPU-µs per request (Valkey answering at once) | rounds |")
    print("|---|---:|---|")
    for checkout, rows in results.items():
        print(f"| {checkout} | {statistics.median(rows):.2f} | {', '.join(f'{r:.2f}' for r in rows)} |")


if __name__ == "__main__":
    main()
