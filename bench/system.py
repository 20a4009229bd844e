"""System benchmark: the whole product on one machine, started as ``aqueduct up`` starts it.

    .venv/bin/python bench/system.py                      # everything, one run (about 5 minutes)
    .venv/bin/python bench/system.py --seconds 2 --skip-litellm --rates 500   # a quick smoke run
    .venv/bin/python bench/system.py --only accounting    # accounting at steady rates only (NATS + accounting)
    .venv/bin/python bench/system.py --only accounting --accounting-source /tmp/old-checkout  # before/after

Placement (two cores or more): everything the product runs (``aqueduct up``: the launcher, the five
services, the batch worker, NATS and Valkey) is pinned to the ``--product-cores`` (default: core 0); the
load generator and the test upstream to the ``--load-cores`` (default: every other core). The LiteLLM
proxy, a reference row, is pinned to the product's cores as well. Load comes from ``wrk`` when it is
installed (``apt-get install wrk``; latency percentiles from its own histogram) and otherwise from a
Python (aiohttp) load generator in a process of its own; streamed requests always from the Python one
(time to first chunk, chunks per second).

The time to the first streamed chunk at concurrency 1 is measured with the generator under
``SCHED_FIFO`` (``bench/loadgen.py --realtime``; root or ``CAP_SYS_NICE``, else the table says "not
realtime"), for every row alike, and again at normal priority (half as long) beside it, without a target.
The test upstream writes a stream's 66 chunks in one burst of about 1 ms of CPU on the generator's core:
called directly, each write wakes the generator on that core and the kernel switches to it at once;
through the product the wake-up comes from the other core, and at normal priority the kernel lets the
upstream finish its burst first (``perf sched timehist``: 0.4 to 0.5 ms runnable behind it, on every
request). That wait is the bench's placement, not the product; a client on a machine of its own, as
under ``SCHED_FIFO`` here, does not have it.

One run measures, for the upstream called directly, the product, the product with accounting stopped
(SIGSTOP: usage events wait in JetStream) and the LiteLLM proxy (no database, as ``bench/proxy.py`` runs
it): requests per second at concurrency 32; p50, p99 and p99.9 latency at concurrency 1 and 32; a
streamed row (time to first chunk p50 at concurrency 1, chunks relayed per second at concurrency 32); and
the CPU time per request of every process of the product (from ``/proc/<pid>/stat``). The concurrency-1
figures of the direct upstream and the product run ``--c1-seconds`` each (about 50,000 requests), in
``--rounds`` alternating rounds while the product runs (each figure the median of its rounds), and
accounting's backlog right after the c=32 load is read with the time until it is all stored. The plain
c=32 figures of the product and of the product with accounting stopped alternate the same way (a round
of each, ``--seconds`` long, ``--rounds`` times; the CPU per request over all rounds): the machine's speed
drifts within a run, and their ratio is issue 15's target. Then it publishes
usage events to JetStream at a steady 100, 500 and 2,000 events per second, grouped into messages as the
proxy's publisher groups them (``bench/steady_usage.py``), and prints accounting's CPU-µs per event at each
rate. Prints markdown tables with the date, the machine and its load average.

``--accounting-source DIR`` runs the accounting service from another checkout (its
``services/accounting`` and ``infra/clickhouse``, e.g. ``git archive <commit> services/accounting
infra/clickhouse | tar -x -C DIR``), to compare two versions on the same machine in the same run:
``--only accounting --compare DIR`` measures both, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from aqueduct_cli.embedded import EmbeddedNats, free_port, wait_for_port  # noqa: E402

PYTHON = sys.executable


# -- processes and CPU time ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads) so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(cores: str) -> list[str]:
    return ["taskset", "-c", cores] if cores else []


def pin_pid(pid: int, cores: str) -> None:
    """Move a running process (all its threads) to ``cores``."""
    if cores:
        subprocess.run(["taskset", "-a", "-c", "-p", cores, str(pid)], check=True, capture_output=True)


def machine_line() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}), load average "
        f"{load} (1, 5, 15 min)"
    )


# -- accounting at steady rates --------------------------------------------------------------------------


def accounting_at_rate(
    nats_url: str, info_url: str, pid: int, rate: float, seconds: float, load_cores: str, prefix: str
) -> dict[str, object]:
    """One steady-rate run of ``bench/steady_usage.py`` (a process of its own, on the load cores)."""
    command = [
        *pinned(load_cores),
        PYTHON,
        str(ROOT / "bench" / "steady_usage.py"),
        *("--nats-url", nats_url, "--info-url", info_url),
        *("--rate", str(rate), "--seconds", str(seconds), "--pid", str(pid), "--prefix", prefix),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"steady_usage failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def settle(
    pid: int, idle_ms_per_s: float = 10.0, window: float = 3.0, at_least: float = 35.0, timeout: float = 150.0
) -> float:
    """Wait ``at_least`` seconds (one roll-up interval of accounting's, 30 s: the roll-up of what the load
    stored), then until ``pid`` spends at most ``idle_ms_per_s`` of CPU per second over ``window`` seconds
    (its background work after a load done), at most ``timeout`` in all; return the seconds waited."""
    started = time.monotonic()
    time.sleep(at_least)
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if (cpu_seconds(pid) - before) / window * 1000 <= idle_ms_per_s:
            break
    return time.monotonic() - started


def accounting_rate_table(rows: list[tuple[str, dict[str, object]]]) -> str:
    lines = [
        "| accounting | events/s asked | achieved | events | CPU-s | CPU-µs per event | backlog at end | "
        "stored all within |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        cpu = r["cpu_seconds"][0]  # type: ignore[index]
        per_event = r["cpu_us_per_event"][0]  # type: ignore[index]
        drained = f"{r['drained_after']:.1f} s" if not r["left"] else f"NOT ({r['left']} left)"
        per = f"{per_event:,.0f}" if r["events"] else f"idle: {cpu / r['seconds'] * 1000:.0f} ms/s"
        lines.append(
            f"| {label} | {r['rate']:,.0f} | {r['achieved_rate']:,.0f} | {r['events']:,} | {cpu:.2f} | "
            f"{per} | {r['backlog_at_end']:,} | {drained} |"
        )
    return "\n".join(lines)


class StandaloneAccounting:
    """``python -m aqueduct_accounting`` on a NATS server of its own (``--only accounting``)."""

    def __init__(self, work: Path, cores: str, source: Path | None = None) -> None:
        self.work = work
        self.cores = cores
        self.source = source
        self.nats = EmbeddedNats(work / "nats")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StandaloneAccounting:
        self.nats.start()
        assert self.nats.process is not None
        pin_pid(self.nats.process.pid, self.cores)  # NATS belongs to the product too
        env = {
            **os.environ,
            "AQUEDUCT_DEV_MODE": "true",
            "AQUEDUCT_NATS_URL": self.nats.url,
            "AQUEDUCT_DATA_DIR": str(self.work / "data"),
            "AQUEDUCT_ACCOUNTING_PORT": str(self.port),
            "AQUEDUCT_LOG_LEVEL": "WARNING",
        }
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.source / "services" / "accounting"), env.get("PYTHONPATH", "")]
            )
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        log = open(self.work / "accounting.log", "ab")
        self.process = subprocess.Popen(
            [*pinned(self.cores), PYTHON, "-m", "aqueduct_accounting"], env=env, stdout=log, stderr=log
        )
        log.close()
        wait_for_port("127.0.0.1", self.port, timeout=120, process=self.process)
        time.sleep(1.0)  # consumers subscribed
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.nats.stop()


def run_accounting_only(args: argparse.Namespace) -> None:
    sources: list[tuple[str, Path | None]] = [("this checkout", args.accounting_source)]
    if args.compare:
        sources.append((f"{args.compare}", args.compare))
    if args.accounting_source:
        sources[0] = (str(args.accounting_source), args.accounting_source)
    results: list[tuple[str, dict[str, object]]] = []
    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-") as tmp:
        services = {}
        try:
            for n, (label, source) in enumerate(sources):
                services[label] = StandaloneAccounting(
                    Path(tmp) / f"s{n}", args.product_cores, source
                ).start()
            for rate in args.rates:
                for label, service in services.items():
                    print(f"accounting ({label}) at {rate:g} events/s ...", file=sys.stderr)
                    assert service.process is not None
                    result = accounting_at_rate(
                        service.nats.url,
                        service.nats.url,
                        service.process.pid,
                        rate,
                        args.rate_seconds,
                        args.load_cores,
                        f"r{rate:g}",
                    )
                    results.append((f"{label} @ {rate:g}/s", result))
        finally:
            for service in services.values():
                service.stop()
    print()
    print(machine_line() + ". Accounting and its NATS pinned to cores " + (args.product_cores or "any") + ".")
    print()
    print(accounting_rate_table(results))


# -- the product, its processes and the load --------------------------------------------------------------

CLASSES = (
    ("aqueduct_proxy.batches", "rest"),
    ("aqueduct_proxy", "proxy"),
    ("aqueduct_accounting", "accounting"),
    ("aqueduct_directory", "directory"),
    ("nats-server", "NATS"),
    ("valkey-server", "Valkey"),
    ("redis-server", "Valkey"),
)
COLUMNS = ("proxy", "accounting", "directory", "NATS", "Valkey", "rest")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_tree(root: int) -> dict[int, str]:
    """Every process under ``root`` (itself included), by the part of the product it belongs to."""
    classes: dict[int, str] = {}
    pending = [(root, "rest")]
    while pending:
        pid, inherited = pending.pop()
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        kind = next((k for marker, k in CLASSES if marker in command), inherited)
        classes[pid] = kind
        pending += [(child, kind) for child in _children(pid)]
    return classes


def cpu_by_part(root: int) -> dict[str, float]:
    totals = dict.fromkeys(COLUMNS, 0.0)
    for pid, kind in process_tree(root).items():
        totals[kind] += cpu_seconds(pid)
    return totals


def find_pid(root: int, kind: str) -> int:
    return next(pid for pid, k in process_tree(root).items() if k == kind and _is_top(pid, kind))


def _is_top(pid: int, kind: str) -> bool:
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return False
    return next((k for marker, k in CLASSES if marker in _cmdline(parent)), "rest") != kind


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def load(
    url: str,
    key: str,
    concurrency: int,
    seconds: float,
    cores: str,
    *,
    stream: bool = False,
    use_wrk: bool = True,
    realtime: bool = False,
) -> dict[str, float]:
    command = [
        *pinned(cores),
        PYTHON,
        str(ROOT / "bench" / "loadgen.py"),
        url,
        key,
        *("--concurrency", str(concurrency), "--seconds", str(seconds)),
    ]
    if stream:
        command += ["--stream", "--max-tokens", "64"]
        if realtime:
            command.append("--realtime")
    elif use_wrk:
        command.append("--wrk")
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_system(
    name: str,
    url: str,
    key: str,
    args: argparse.Namespace,
    root: int | None = None,
    *,
    concurrency_one: bool = True,
    plain_many: bool = True,
) -> dict[str, object]:
    """c=1 and c=32 plain, then streamed at c=1 (first chunk) and c=32 (chunks per second). Without
    ``concurrency_one`` the c=1 rows are left to ``measure_alternating``; without ``plain_many`` the
    plain c=32 row (and the CPU per request) to ``measure_many_alternating``."""
    print(f"measuring {name} ...", file=sys.stderr)
    use_wrk = not args.no_wrk
    row: dict[str, object] = {"name": name}
    if concurrency_one:
        row["c1"] = load(url, key, 1, args.c1_seconds, args.load_cores, use_wrk=use_wrk)
    if plain_many:
        row["c32"], cpu = _many(url, key, args, root)
        if cpu is not None:
            row["cpu_us"] = cpu
    if concurrency_one:
        row["s1"] = load(url, key, 1, args.c1_seconds, args.load_cores, stream=True, realtime=True)
        row["s1n"] = load(url, key, 1, args.c1_seconds / 2, args.load_cores, stream=True)
    row["s32"] = load(url, key, 32, args.seconds, args.load_cores, stream=True)
    return row


def _many(
    url: str, key: str, args: argparse.Namespace, root: int | None
) -> tuple[dict[str, float], dict[str, float] | None]:
    """One plain c=32 measurement, and the CPU per request of every part of the product (``root``)."""
    before = cpu_by_part(root) if root else {}
    many = load(url, key, 32, args.seconds, args.load_cores, use_wrk=not args.no_wrk)
    if not root:
        return many, None
    after = cpu_by_part(root)
    requests = max(int(many["requests"]), 1)
    return many, {k: (after[k] - before[k]) / requests * 1e6 for k in COLUMNS}


def measure_many_alternating(
    product: dict[str, object],
    paused: dict[str, object],
    url: str,
    key: str,
    root: int,
    info_url: str,
    args: argparse.Namespace,
) -> None:
    """The plain c=32 figures of the product and of the product with accounting stopped (SIGSTOP), in
    ``args.rounds`` alternating rounds of ``args.seconds`` each (requests/s and latencies the median of
    the rounds, CPU per request over all of them): the machine's speed drifts within a run (about 2x
    between two figures measured minutes apart, seen here), and the ratio between the two rows must not
    measure that drift. Before each round of the product, accounting has stored what the round before
    it left (what it reads and stores during the round is the product's cost)."""
    runs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {"product": [], "paused": []}
    for round_ in range(args.rounds):
        print(f"concurrency 32, round {round_ + 1} of {args.rounds} ...", file=sys.stderr)
        wait_drained(info_url)
        many, cpu = _many(url, key, args, root)
        assert cpu is not None
        runs["product"].append((many, cpu))
        accounting = find_pid(root, "accounting")
        os.kill(accounting, signal.SIGSTOP)
        try:
            many, cpu = _many(url, key, args, root)
            assert cpu is not None
            runs["paused"].append((many, cpu))
        finally:
            os.kill(accounting, signal.SIGCONT)
    for row, name in ((product, "product"), (paused, "paused")):
        results = runs[name]
        row["c32"] = _median_of([many for many, _ in results])
        requests = [int(many["requests"]) for many, _ in results]
        row["cpu_us"] = {
            k: sum(cpu[k] * n for (_, cpu), n in zip(results, requests, strict=True)) / max(sum(requests), 1)
            for k in COLUMNS
        }
    wait_drained(info_url)


def _median_of(results: list[dict[str, float]]) -> dict[str, float]:
    """Each figure the median of the rounds; the requests summed (the samples behind the percentiles)."""
    merged = dict(results[0])
    for name, value in results[0].items():
        if isinstance(value, int | float) and name != "requests":
            merged[name] = statistics.median(float(r[name]) for r in results)
    merged["requests"] = sum(int(r["requests"]) for r in results)
    return merged


def measure_alternating(targets: list[tuple[dict[str, object], str, str]], args: argparse.Namespace) -> None:
    """The concurrency-1 figures (latency percentiles, first streamed chunk) of the rows in ``targets``
    (row, URL, key), measured in turn, ``args.rounds`` times, ``args.c1_seconds`` in all per figure:
    other load on the machine then weighs on each row alike, and the ratios between rows compare like
    with like."""
    use_wrk = not args.no_wrk
    kinds = ("c1", "s1", "s1n")  # plain; streamed, the generator under SCHED_FIFO; streamed, normal priority
    runs: dict[int, dict[str, list[dict[str, float]]]] = {
        id(row): {k: [] for k in kinds} for row, _, _ in targets
    }
    seconds = args.c1_seconds / args.rounds
    for round_ in range(args.rounds):
        print(f"concurrency 1, round {round_ + 1} of {args.rounds} ...", file=sys.stderr)
        for kind in kinds:
            for row, url, key in targets:
                runs[id(row)][kind].append(
                    load(
                        url,
                        key,
                        1,
                        seconds / 2 if kind == "s1n" else seconds,
                        args.load_cores,
                        stream=kind != "c1",
                        use_wrk=use_wrk,
                        realtime=kind == "s1",
                    )
                )
    for row, _, _ in targets:
        for kind in kinds:
            row[kind] = _median_of(runs[id(row)][kind])


def config_text(upstream_url: str) -> str:
    return f"""\
default_org: default
endpoints:
  - slug: fake
    url: {upstream_url}
    provider: openai
    api_key: ${{FAKE_UPSTREAM_KEY}}
models:
  - name: fake-model
    endpoint: fake
    upstream_model: fake-model
    input_price_per_million: 1.0
    output_price_per_million: 2.0
orgs:
  - name: default
    limits: {{requests_per_minute: 1000000000, input_tokens_per_minute: 1000000000000, output_tokens_per_minute: 1000000000000}}
"""


def start_upstream(cores: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [*pinned(cores), PYTHON, "-m", "tests.support.upstream", "--port", str(port)], cwd=ROOT
    )
    wait_for_port("127.0.0.1", port, process=process)
    return process, f"http://127.0.0.1:{port}/v1"


def start_product(work: Path, upstream_url: str, cores: str):  # type: ignore[no-untyped-def]
    """``aqueduct up`` (tests/support/stack.py) with every process it starts pinned to ``cores``."""
    from tests.support.stack import Stack

    config = work / "aqueduct.yaml"
    config.write_text(config_text(upstream_url))
    stack = Stack(work, config, env={"AQUEDUCT_LOG_LEVEL": "WARNING"})
    mine = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})  # inherited by everything it starts
    try:
        stack.start(timeout=240)
    finally:
        os.sched_setaffinity(0, mine)
    stack.login_admin()
    token = stack.cli("tokens", "create", "--name", "bench", "--quiet").stdout.strip()
    return stack, token


def product_nats(stack) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """NATS URLs with the proxy's credentials (to publish usage) and accounting's (to read its consumer)."""
    runtime = json.loads((stack.data_dir / "runtime.json").read_text())
    users = json.loads((stack.data_dir / "nats" / "users.json").read_text())
    address = runtime["nats_url"].split("://", 1)[1].rsplit("@", 1)[-1]
    from urllib.parse import quote

    def url(user: str) -> str:
        return f"nats://{quote(user)}:{quote(users[user], safe='')}@{address}"

    return url("proxy"), url("accounting")


def backlog(info_url: str) -> int:
    """Usage events the accounting consumer has not stored yet (pending or unacknowledged)."""
    import nats

    from aqueduct_libs.bus import inbox_prefix_of

    async def pending() -> int:
        nc = await nats.connect(info_url, inbox_prefix=inbox_prefix_of(info_url))
        try:
            info = await nc.jetstream().consumer_info("USAGE", "accounting-usage")
            return int(info.num_pending) + int(info.num_ack_pending)
        finally:
            await nc.close()

    return asyncio.run(pending())


def wait_drained(info_url: str, timeout: float = 120.0) -> float:
    """Until the accounting consumer has nothing pending or unacknowledged; returns the seconds waited."""
    started = time.monotonic()
    while backlog(info_url) > 0 and time.monotonic() - started < timeout:
        time.sleep(0.2)
    return time.monotonic() - started


def systems_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| system | req/s @32 | p50 / p99 / p99.9 @1 (ms) (requests) | p50 / p99 / p99.9 @32 (ms) | streamed: "
        "first chunk p50 / p99 @1 (ms) | first chunk p50 @1, generator at normal priority (ms) | "
        "streamed: chunks/s @32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        c1, c32, s1, s1n, s32 = (row[k] for k in ("c1", "c32", "s1", "s1n", "s32"))
        lines.append(
            f"| {row['name']} | {c32['rps']:,.0f} | {c1['p50']:.2f} / {c1['p99']:.2f} / {c1['p999']:.2f} "  # type: ignore[index]
            f"({c1['requests']:,}) | "  # type: ignore[index]
            f"{c32['p50']:.2f} / {c32['p99']:.2f} / {c32['p999']:.2f} | "  # type: ignore[index]
            f"{s1['ttft_p50']:.2f} / {s1['ttft_p99']:.2f}{'' if s1.get('realtime') else ' (not realtime)'} | "  # type: ignore[index,union-attr]
            f"{s1n['ttft_p50']:.2f} | {s32['chunks_per_s']:,.0f} |"  # type: ignore[index]
        )
    return "\n".join(lines)


def cpu_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| CPU-µs per request @32 | " + " | ".join(COLUMNS) + " | total |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for row in rows:
        cpu = row.get("cpu_us")
        if not isinstance(cpu, dict):
            continue
        lines.append(
            f"| {row['name']} | "
            + " | ".join(f"{cpu[k]:,.0f}" for k in COLUMNS)
            + f" | {sum(cpu.values()):,.0f} |"
        )
    return "\n".join(lines)


def targets_table(rows: dict[str, dict[str, object]], rates: list[tuple[str, dict[str, object]]]) -> str:
    product, paused, direct = rows["product"], rows.get("paused"), rows["direct"]
    litellm = rows.get("litellm")
    checks: list[tuple[str, str, bool]] = []

    def rps(row: dict[str, object]) -> float:
        return float(row["c32"]["rps"])  # type: ignore[index]

    if paused:
        ratio = rps(product) / rps(paused)
        checks.append(
            ("req/s @32, product / product with accounting stopped", f"{ratio:.2f} (>= 0.85)", ratio >= 0.85)
        )
    if litellm and rps(litellm) > 0:
        ratio = rps(product) / rps(litellm)
        checks.append(("req/s @32, product / LiteLLM proxy", f"{ratio:.1f} (>= 10)", ratio >= 10))
    elif litellm:
        checks.append(("req/s @32, product / LiteLLM proxy", "no LiteLLM request succeeded", False))
    c1 = product["c1"]
    ratio = c1["p99"] / c1["p50"]  # type: ignore[index]
    checks.append(("p99 / p50 @1, product", f"{ratio:.1f} (<= 5)", ratio <= 5))
    ratio = c1["p999"] / c1["p50"]  # type: ignore[index]
    checks.append(("p99.9 / p50 @1, product (no target; for the tail)", f"{ratio:.1f}", True))
    if "backlog" in product:
        keeps_up = float(product["drained_after"]) < 60  # type: ignore[arg-type]
        checks.append(
            (
                "accounting keeps up @32: backlog right after the load, stored all within",
                f"{product['backlog']:,} events, {product['drained_after']:.1f} s (< 60 s)",
                keeps_up,
            )
        )
    ratio = product["s1"]["ttft_p50"] / direct["s1"]["ttft_p50"]  # type: ignore[index]
    checks.append(("streamed first chunk p50, product / direct", f"{ratio:.2f} (<= 2.5)", ratio <= 2.5))
    ratio = product["s1n"]["ttft_p50"] / direct["s1n"]["ttft_p50"]  # type: ignore[index]
    checks.append(
        (
            "streamed first chunk p50, product / direct, generator at normal priority (no target: it also "
            "measures the generator's wait behind the upstream's burst on their shared core)",
            f"{ratio:.2f}",
            True,
        )
    )
    ratio = product["s32"]["chunks_per_s"] / direct["s32"]["chunks_per_s"]  # type: ignore[index]
    checks.append(("chunks relayed per second, product / direct", f"{ratio:.2f} (>= 0.6)", ratio >= 0.6))
    for label, result in rates:
        if result["rate"] == 500 and result["events"]:
            per = result["cpu_us_per_event"][0]  # type: ignore[index]
            checks.append((f"accounting CPU-µs per event, {label}", f"{per:.0f} (<= 50)", per <= 50))
    lines = ["| target (issue 15) | measured | met |", "|---|---:|---|"]
    lines += [f"| {label} | {value} | {'yes' if ok else 'NO'} |" for label, value, ok in checks]
    return "\n".join(lines)


def run_everything(args: argparse.Namespace) -> None:
    rows: dict[str, dict[str, object]] = {}
    rates: list[tuple[str, dict[str, object]]] = []
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-") as tmp:
        work = Path(tmp)
        stack = None
        try:
            upstream, upstream_url = start_upstream(args.load_cores)
            processes.append(upstream)
            direct_url = f"{upstream_url}/chat/completions"
            rows["direct"] = measure_system(
                "test upstream, direct", direct_url, "x", args, concurrency_one=False
            )

            print("starting the product (aqueduct up) ...", file=sys.stderr)
            (work / "product").mkdir()
            stack, token = start_product(work / "product", upstream_url, args.product_cores)
            root = stack.process.pid
            url = f"{stack.urls['proxy']}/v1/chat/completions"
            publish_url, info_url = product_nats(stack)
            rows["product"] = product = measure_system(
                "Aqueduct, whole product (aqueduct up)",
                url,
                token,
                args,
                root,
                concurrency_one=False,
                plain_many=False,
            )
            # Accounting keeps up under full load: what is left right after it (the streamed c=32 run
            # ended last), and how long until all of it is stored.
            product["backlog"] = backlog(info_url)
            product["drained_after"] = wait_drained(info_url)
            measure_alternating([(rows["direct"], direct_url, "x"), (product, url, token)], args)
            wait_drained(info_url)

            accounting = find_pid(root, "accounting")
            os.kill(accounting, signal.SIGSTOP)
            try:
                rows["paused"] = measure_system(
                    "Aqueduct, accounting stopped (SIGSTOP)", url, token, args, root, plain_many=False
                )
            finally:
                os.kill(accounting, signal.SIGCONT)
            measure_many_alternating(product, rows["paused"], url, token, root, info_url, args)
            print("accounting catches up ...", file=sys.stderr)
            wait_drained(info_url)
            # A steady rate is measured in a steady state: not while accounting still rolls up and its
            # engine merges the parts of the tens of thousands of events the load above stored.
            settled = settle(find_pid(root, "accounting"))
            print(f"accounting settled after {settled:.0f} s", file=sys.stderr)

            for rate in args.rates:
                print(f"accounting at {rate:g} events/s ...", file=sys.stderr)
                result = accounting_at_rate(
                    publish_url,
                    info_url,
                    find_pid(root, "accounting"),
                    rate,
                    args.rate_seconds,
                    args.load_cores,
                    f"r{rate:g}",
                )
                rates.append((f"{rate:g} events/s", result))
            stack.stop()
            stack = None

            if not args.skip_litellm:
                sys.path.insert(0, str(ROOT / "bench"))
                from proxy import LITELLM_VERSION, MASTER_KEY, start_litellm

                port = free_port()
                litellm = start_litellm(
                    port, upstream_url, work, model="fake-model"
                )  # the model the load asks for
                processes.append(litellm)
                for pid in process_tree(litellm.pid):
                    with contextlib.suppress(subprocess.CalledProcessError):
                        pin_pid(pid, args.product_cores)
                rows["litellm"] = measure_system(
                    f"LiteLLM proxy {LITELLM_VERSION} (master key, no database)",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    MASTER_KEY,
                    args,
                    litellm.pid,
                )
        finally:
            if stack is not None:
                with contextlib.suppress(Exception):
                    stack.stop()
            for process in processes:
                if process.poll() is None:
                    process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(30)

    order = [rows[k] for k in ("direct", "product", "paused", "litellm") if k in rows]
    load_tool = "wrk" if rows["product"]["c1"].get("tool") == "wrk" else "Python (aiohttp)"  # type: ignore[union-attr]
    print()
    print(
        f"{machine_line()}. The product (everything aqueduct up starts) and the LiteLLM proxy pinned to "
        f"core(s) {args.product_cores or 'any'}; the load generator ({load_tool}; streamed requests: Python) "
        f"and the test upstream to core(s) {args.load_cores or 'any'}. {args.seconds:g} s per c=32 measurement; "
        f"c=1 figures {args.c1_seconds:g} s each, the direct upstream's and the product's in {args.rounds} "
        "alternating rounds (each figure the median of its rounds) while the product runs."
    )
    print()
    print(systems_table(order))
    print()
    print(cpu_table(order))
    print()
    print(accounting_rate_table(rates))
    print()
    print(targets_table(rows, rates))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cores = os.sched_getaffinity(0)
    parser.add_argument("--product-cores", default="0" if len(cores) > 1 else "")
    parser.add_argument(
        "--load-cores", default=",".join(str(c) for c in sorted(cores) if c != 0) if len(cores) > 1 else ""
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each c=32 measurement")
    parser.add_argument(
        "--c1-seconds",
        type=float,
        default=24.0,
        help="duration of each concurrency-1 figure (about 50,000 requests at 0.45 ms: p99.9 from 50)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds the direct and product c=1 figures alternate in"
    )
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="measured window of each rate")
    parser.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[100.0, 500.0, 2000.0]
    )
    parser.add_argument("--only", choices=["accounting"], default=None)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--accounting-source", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None)
    parser.add_argument("--no-wrk", action="store_true", help="the Python load generator even if wrk is here")
    args = parser.parse_args()
    if args.only == "accounting":
        run_accounting_only(args)
    else:
        run_everything(args)


if __name__ == "__main__":
    main()
