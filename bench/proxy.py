"""Benchmark: the test upstream called directly, the Aqueduct proxy, and the LiteLLM proxy, on one machine.

Run from the repository root: ``make bench`` or ``.venv/bin/python bench/proxy.py``. Everything uses the
same OpenAI-compatible test upstream (``python -m tests.support.upstream``), one worker process each.
The Aqueduct proxy runs with authentication, rate limits (Valkey) and usage events (NATS JetStream) on,
measured twice in one run: with budgets off, and with budgets on (the token's user, team and org each
have a daily and a monthly budget, in dollars and tokens, high enough never to refuse: every request
reserves its worst case on six counters in Valkey and settles it). The two are measured alternately
(``--rounds``, the median of each is shown, with the ratio): this machine's load drifts within a minute.
``--skip-budgets`` leaves that row out.
LiteLLM (a pinned, known-good version) is installed on first use into ``bench/.venv-litellm``, never
into the project's environment; ``--skip-litellm`` leaves it out.

The Aqueduct proxy is measured twice in one run: on chat completions, and on Anthropic's ``/v1/messages``
translated to the same chat upstream (the cost of the translation is the difference of the two rows).

Prints a markdown table: requests/s at concurrency 32, p50/p99 latency at concurrency 1 and 32, and the
resident memory (RSS, summed over the process tree) of each proxy after the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(ROOT),
    str(ROOT / "services" / "cli"),
    str(ROOT / "libs"),
    str(ROOT / "services" / "proxy"),
]

from aqueduct_cli.embedded import EmbeddedNats, EmbeddedValkey, free_port, wait_for_port  # noqa: E402

LITELLM_VERSION = "1.106.0"
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
SECRET = "bench-secret-key-0123456789abcdef0123456789"
MASTER_KEY = "sk-bench-master-key"
BODY = {
    "model": "gpt-test",
    "messages": [{"role": "user", "content": "hello there how are you"}],
    "max_tokens": 5,
}
# The same request in Anthropic's Messages format (/v1/messages, translated to the chat upstream).
MESSAGES_BODY = {
    "model": "gpt-test",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hello there how are you"}],
}


# -- load generation -----------------------------------------------------------------------------------


async def measure(
    url: str,
    key: str,
    concurrency: int,
    seconds: float,
    pid: int | None = None,
    body: dict[str, object] | None = None,
) -> dict[str, float]:
    """Closed-loop load: ``concurrency`` workers each sending the next request when the last one ends."""
    latencies: list[float] = []
    errors = 0
    body = body or BODY
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        # Warm up connections and caches.
        for _ in range(20):
            async with session.post(url, json=body) as r:
                await r.read()
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, json=body) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - started)

        started, cpu_before = time.perf_counter(), cpu_seconds(pid) if pid else 0.0
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    latencies.sort()
    if not latencies:
        raise RuntimeError(f"no successful request to {url} ({errors} errors)")
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
        # CPU time the server spent per request: comparable even on a busy machine.
        "cpu_us": cpu / len(latencies) * 1e6 if pid else 0.0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far."""
    total, pids = 0.0, [pid]
    ticks = os.sysconf("SC_CLK_TCK")
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            pids += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except FileNotFoundError:
            continue
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total, pids = 0, [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids += [int(c) for c in children]
        except FileNotFoundError:
            continue
    return total / 1024


# -- the systems under test ----------------------------------------------------------------------------


def start_upstream(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.upstream", "--port", str(port)], cwd=ROOT
    )
    wait_for_port("127.0.0.1", port, process=process)
    return process


async def write_snapshot(nats_url: str, upstream_url: str) -> tuple[str, str]:
    """Two tokens: one whose user, team and org have no budgets, and one whose have."""
    from aqueduct_libs import names
    from aqueduct_libs.bus import connect, ensure_topology
    from aqueduct_libs.snapshot import BudgetRule, EndpointRoute, Limits, ModelRoute, TokenGrant
    from aqueduct_libs.tokens import generate_token, hash_token

    nc = await connect(nats_url, "bench")
    js = nc.jetstream()
    await ensure_topology(js)
    kv = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
    await kv.put(
        names.snapshot_endpoint_key("local"),
        EndpointRoute(slug="local", url=upstream_url).model_dump_json().encode(),
    )
    await kv.put(
        names.snapshot_model_key("gpt-test"),
        ModelRoute(
            name="gpt-test",
            endpoint="local",
            upstream_model="fake-model",
            input_price_nanos_per_token=150,
            output_price_nanos_per_token=600,
        )
        .model_dump_json()
        .encode(),
    )
    # Limits are on (checked in Valkey on every request) but high enough never to refuse.
    limits = Limits(
        requests_per_minute=10**9, input_tokens_per_minute=10**12, output_tokens_per_minute=10**12
    )
    values = []
    for suffix in ("", "-budgeted"):
        value = generate_token()
        token_hash = hash_token(value, SECRET.encode())
        grant = TokenGrant(
            token_id="bench" + suffix,
            token_hash=token_hash,
            name="bench",
            user_id="u" + suffix,
            team_id="t" + suffix,
            org_id="o" + suffix,
            limits=limits,
        )
        await kv.put(names.snapshot_token_key(token_hash), grant.model_dump_json().encode())
        values.append(value)
    for scope, scope_id in (("user", "u-budgeted"), ("team", "t-budgeted"), ("org", "o-budgeted")):
        rule = BudgetRule(
            scope=scope,  # type: ignore[arg-type]
            scope_id=scope_id,
            daily_nanos=10**15,
            monthly_nanos=10**16,
            daily_tokens=10**15,
            monthly_tokens=10**16,
        )
        await kv.put(names.snapshot_budget_key(scope, scope_id), rule.model_dump_json().encode())
    await nc.close()
    return values[0], values[1]


def start_aqueduct(
    port: int, nats: EmbeddedNats, valkey: EmbeddedValkey, data_dir: Path, upstream_client: str = "builtin"
) -> subprocess.Popen:
    env = {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_SECRET_KEY": SECRET,
        "AQUEDUCT_NATS_URL": nats.url,
        "AQUEDUCT_DATA_DIR": str(data_dir),
        "AQUEDUCT_PROXY_PORT": str(port),
        "AQUEDUCT_PROXY_REDIS_URL": valkey.url,
        "AQUEDUCT_PROXY_UPSTREAM_CLIENT": upstream_client,
        "AQUEDUCT_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "aqueduct_proxy"], env=env, cwd=ROOT)
    wait_for_port("127.0.0.1", port, timeout=60, process=process)
    return process


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once) ...", file=sys.stderr)
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    subprocess.run([uv, "venv", "--python", sys.executable, str(LITELLM_VENV)], check=True)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--python",
            str(LITELLM_VENV / "bin" / "python"),
            f"litellm[proxy]=={LITELLM_VERSION}",
        ],
        check=True,
    )
    return binary


def start_litellm(port: int, upstream_url: str, workdir: Path, model: str = "gpt-test") -> subprocess.Popen:
    binary = ensure_litellm()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: sk-upstream\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "true",
    }
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, timeout=180, process=process)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


# -- the run -------------------------------------------------------------------------------------------


async def bench_one(
    name: str, url: str, key: str, seconds: float, pid: int | None, body: dict[str, object] | None = None
) -> dict[str, object]:
    print(f"measuring {name} ...", file=sys.stderr)
    single = await measure(url, key, 1, seconds, pid, body)
    many = await measure(url, key, 32, seconds, pid, body)
    return {"name": name, "c1": single, "c32": many, "rss": rss_mb(pid) if pid else None}


async def bench_budgets(
    url: str, token: str, budgeted: str, seconds: float, pid: int, rounds: int
) -> tuple[list[dict[str, object]], str]:
    """Budgets off and on, the load at concurrency 32 alternated ``rounds`` times (this machine's load
    drifts within a minute; which goes first alternates too): each row keeps its median round (and the median CPU per request), and the
    ratio of the two medians with the median of the rounds' own ratios."""
    names = (
        "Aqueduct proxy (auth + limits + usage events)",
        "Aqueduct proxy, same + budgets (user, team, org; day, month)",
    )
    keys = (token, budgeted)
    print("measuring budgets off and on, alternated ...", file=sys.stderr)
    single = [await measure(url, key, 1, seconds, pid) for key in keys]
    many: list[list[dict[str, float]]] = [[], []]
    for round_ in range(rounds):
        # Which goes first alternates (off-on, on-off, ...): the second of a pair measured about 3 % slower
        # with no budgets on either token (the machine warming, the bus's backlog), a bias not to give one.
        for i in (0, 1) if round_ % 2 == 0 else (1, 0):
            many[i].append(await measure(url, keys[i], 32, seconds, pid))
    rows = []
    for i in range(2):
        ordered = sorted(many[i], key=lambda m: m["rps"])
        median = {**ordered[len(ordered) // 2], "cpu_us": statistics.median(m["cpu_us"] for m in many[i])}
        rows.append({"name": names[i], "c1": single[i], "c32": median, "rss": rss_mb(pid)})
    ratios = [on["rps"] / off["rps"] for off, on in zip(many[0], many[1], strict=True)]
    off_rps, on_rps = rows[0]["c32"]["rps"], rows[1]["c32"]["rps"]  # type: ignore[index]
    off_cpu, on_cpu = rows[0]["c32"]["cpu_us"], rows[1]["c32"]["cpu_us"]  # type: ignore[index]
    summary = (
        f"Budgets on / off at concurrency 32, {rounds} alternated rounds: {on_rps / off_rps:.2f} of the "
        f"requests per second (ratio of the medians), {statistics.median(ratios):.2f} (median of the "
        f"rounds' ratios: {', '.join(f'{r:.2f}' for r in ratios)}); the proxy's CPU per request "
        f"{on_cpu / off_cpu:.2f} of budgets off (medians: less noisy on a busy machine)."
    )
    return rows, summary


def table(rows: list[dict[str, object]], seconds: float) -> str:
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}), {seconds:g} s per measurement, one worker process each.",
        "",
        "| system | req/s @32 | p50 @1 (ms) | p99 @1 (ms) | p50 @32 (ms) | p99 @32 (ms) | CPU µs/req @32 "
        "| RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        c1, c32 = row["c1"], row["c32"]
        assert isinstance(c1, dict) and isinstance(c32, dict)
        rss = f"{row['rss']:.0f}" if row["rss"] is not None else "-"
        lines.append(
            f"| {row['name']} | {c32['rps']:.0f} | {c1['p50']:.2f} | {c1['p99']:.2f} | "
            f"{c32['p50']:.2f} | {c32['p99']:.2f} | {c32['cpu_us']:.0f} | {rss} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each measurement")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-budgets", action="store_true", help="no 'budgets on' row")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="budgets off and on are measured alternately this many times (their medians are shown)",
    )
    parser.add_argument(
        "--upstream-client",
        choices=("builtin", "aiohttp", "both"),
        default="builtin",
        help="the proxy's upstream HTTP client; 'both' adds a row with aiohttp's client for every call",
    )
    args = parser.parse_args()
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

    processes: list[subprocess.Popen] = []
    summary = ""
    engines: list[EmbeddedNats | EmbeddedValkey] = []
    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-") as tmp:
        work = Path(tmp)
        try:
            upstream_port = free_port()
            processes.append(start_upstream(upstream_port))
            upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
            rows = [
                await bench_one(
                    "upstream, direct",
                    f"{upstream_url}/chat/completions",
                    "x",
                    args.seconds,
                    processes[0].pid,
                )
            ]

            nats = EmbeddedNats(work / "nats").start()
            valkey = EmbeddedValkey(work / "valkey").start()
            engines += [nats, valkey]
            token, budgeted = await write_snapshot(nats.url, upstream_url)
            port = free_port()
            aqueduct = start_aqueduct(port, nats, valkey, work / "aqueduct")
            processes.append(aqueduct)
            await asyncio.sleep(1.0)  # the snapshot watch delivers the token
            if args.skip_budgets:
                rows.append(
                    await bench_one(
                        "Aqueduct proxy (auth + limits + usage events)",
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        token,
                        args.seconds,
                        aqueduct.pid,
                    )
                )
            else:
                pair, summary = await bench_budgets(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    token,
                    budgeted,
                    args.seconds,
                    aqueduct.pid,
                    args.rounds,
                )
                rows += pair
            rows.append(
                await bench_one(
                    "Aqueduct proxy, /v1/messages translated to the chat upstream",
                    f"http://127.0.0.1:{port}/v1/messages",
                    token,
                    args.seconds,
                    aqueduct.pid,
                    MESSAGES_BODY,
                )
            )
            stop(aqueduct)
            if args.upstream_client in ("aiohttp", "both"):
                port = free_port()
                aqueduct = start_aqueduct(
                    port, nats, valkey, work / "aqueduct-aiohttp", upstream_client="aiohttp"
                )
                processes.append(aqueduct)
                await asyncio.sleep(1.0)
                rows.append(
                    await bench_one(
                        "Aqueduct proxy, aiohttp's upstream client instead of the built-in one",
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        token,
                        args.seconds,
                        aqueduct.pid,
                    )
                )
                stop(aqueduct)

            if not args.skip_litellm:
                port = free_port()
                litellm = start_litellm(port, upstream_url, work)
                processes.append(litellm)
                rows.append(
                    await bench_one(
                        f"LiteLLM proxy {LITELLM_VERSION} (master key, no DB)",
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        MASTER_KEY,
                        args.seconds,
                        litellm.pid,
                    )
                )
        finally:
            for process in processes:
                stop(process)
            for engine in engines:
                engine.stop()
    print(table(rows, args.seconds))
    if summary:
        print("\n" + summary)


if __name__ == "__main__":
    asyncio.run(main())
