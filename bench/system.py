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

One run measures, for the upstream called directly, the product, the product with accounting stopped
(SIGSTOP: usage events wait in JetStream) and the LiteLLM proxy (no database, as ``bench/proxy.py`` runs
it): requests per second at concurrency 32; p50, p99 and p99.9 latency at concurrency 1 and 32; a
streamed row (time to first chunk p50 at concurrency 1, chunks relayed per second at concurrency 32); and
the CPU time per request of every process of the product (from ``/proc/<pid>/stat``). Then it publishes
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
import json
import os
import platform
import signal
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cores = os.sched_getaffinity(0)
    parser.add_argument("--product-cores", default="0" if len(cores) > 1 else "")
    parser.add_argument(
        "--load-cores", default=",".join(str(c) for c in sorted(cores) if c != 0) if len(cores) > 1 else ""
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each load measurement")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="measured window of each rate")
    parser.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[100.0, 500.0, 2000.0]
    )
    parser.add_argument("--only", choices=["accounting"], default=None)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--accounting-source", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None)
    args = parser.parse_args()
    if args.only == "accounting":
        run_accounting_only(args)


if __name__ == "__main__":
    main()
