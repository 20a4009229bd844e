"""Directory benchmark: replay, snapshot size and snapshot load time at scale.

    .venv/bin/python bench/directory.py [--tokens 100000] [--teams 1000] [--users-per-team 10]

Seeds one org with ``--teams`` teams, ``--users-per-team`` members each and ``--tokens`` personal tokens
spread evenly over the members (the seeding writes aggregates in batches, bypassing per-command checks,
so that only what follows is measured). Then, on a fresh embedded NATS server:

- replay: fold every stored event into a new read model (what a restart or ``aqueduct replay`` does),
  compute the snapshot, and write it into the empty ``auth_snapshot`` KV bucket;
- snapshot size: keys and bytes in the bucket;
- load: a fresh consumer (the proxy's ``KVWatcher``) reads the whole bucket and parses every grant.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats

from aqueduct_cli.embedded import EmbeddedNats, free_port
from aqueduct_directory.adapters.persistence import event_store_env
from aqueduct_directory.adapters.projection import SnapshotProjector, compute_snapshot
from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.domain.catalog import Endpoint, Model
from aqueduct_directory.domain.org import Org, Team, User
from aqueduct_directory.domain.token import Token
from aqueduct_libs import bus, names
from aqueduct_libs.snapshot import TokenGrant
from aqueduct_libs.tokens import generate_token, hash_token, preview_token

SECRET = b"bench-secret-key-0123456789abcdef0123"
BATCH = 2000


def seed(app: DirectoryApp, tokens: int, teams: int, users_per_team: int) -> None:
    now = datetime.now(UTC)
    org = Org("bench", "staff", {"requests_per_minute": 60}, {}, actor="system")
    endpoint = Endpoint("openai", "http://upstream/v1", "openai", "OPENAI_API_KEY", actor="system")
    models = [Model(f"model-{i}", "openai", f"model-{i}", "1.0", "2.0", [], actor="system") for i in range(5)]
    app.save(org, endpoint, *models)
    members: list[tuple[str, str]] = []
    pending: list = []
    for t in range(teams):
        team = Team(str(org.id), f"team-{t:04d}", "", {"requests_per_minute": 100 + t % 7}, actor="system")
        for u in range(users_per_team):
            user = User(
                str(org.id),
                f"u{t}-{u}@bench.test",
                f"User {t}-{u}",
                f"local:u{t}-{u}",
                False,
                False,
                "system",
            )
            team.add_member(str(user.id), u == 0, now, actor="system")
            members.append((str(user.id), str(team.id)))
            pending.append(user)
        pending.append(team)
        if len(pending) >= BATCH:
            app.save(*pending)
            pending = []
    for i in range(tokens):
        user_id, team_id = members[i % len(members)]
        value = generate_token()
        token_hash, preview = hash_token(value, SECRET), preview_token(value)
        pending.append(
            Token(f"t{i}", token_hash, preview, user_id, None, team_id, str(org.id), None, "system")
        )
        if len(pending) >= BATCH:
            app.save(*pending)
            pending = []
    app.save(*pending)


async def measure(db: Path, nats_url: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    started = time.perf_counter()
    app = DirectoryApp(
        env=event_store_env(f"sqlite:///{db}", db.parent), secret_key=SECRET, max_tokens_per_user=1_000_000
    )
    fold = time.perf_counter() - started
    events = app.state.position
    rows.append(("events in the store", f"{events:,}"))
    rows.append(
        ("replay: fold all events into the read model", f"{fold:.2f} s ({events / fold:,.0f} events/s)")
    )
    started = time.perf_counter()
    snapshot = compute_snapshot(app.state)
    compute = time.perf_counter() - started
    rows.append(("replay: compute the snapshot in memory", f"{compute:.2f} s"))
    nc = await bus.connect(nats_url, "bench-directory")
    js = nc.jetstream()
    await bus.ensure_topology(js)
    projector = SnapshotProjector(app, js)
    started = time.perf_counter()
    await projector.load()
    write = time.perf_counter() - started
    rate = len(snapshot) / write
    rows.append(
        (
            "replay: project into the empty KV bucket",
            f"{write:.2f} s (recompute and write, {rate:,.0f} keys/s)",
        )
    )
    rows.append(("replay: total (fold + project)", f"{fold + write:.2f} s"))
    size = sum(len(v) for v in snapshot.values())
    tokens = sum(1 for k in snapshot if k.startswith(names.SNAPSHOT_TOKEN_PREFIX))
    rows.append(("snapshot keys (tokens)", f"{len(snapshot):,} ({tokens:,})"))
    rows.append(
        ("snapshot size (values)", f"{size / 1e6:.1f} MB, {size / max(len(snapshot), 1):.0f} B per key")
    )

    # The bucket's raw contents, without parsing: what the bus itself costs a fresh reader.
    started = time.perf_counter()
    raw = await bus.read_bucket(js, names.AUTH_SNAPSHOT_BUCKET)
    rows.append(
        ("read the whole bucket, no parsing", f"{time.perf_counter() - started:.2f} s ({len(raw):,} keys)")
    )

    # A freshly started proxy: connect, watch the bucket, parse every grant, until the initial load is done.
    started = time.perf_counter()
    consumer = await nats.connect(nats_url)
    grants: dict[str, TokenGrant] = {}

    def on_put(key: str, value: bytes) -> None:
        if key.startswith(names.SNAPSHOT_TOKEN_PREFIX):
            grants[key] = TokenGrant.model_validate_json(value)

    watcher = bus.KVWatcher(consumer.jetstream(), names.AUTH_SNAPSHOT_BUCKET, on_put, lambda key: None)
    watcher.start()
    await watcher.ready.wait()
    load = time.perf_counter() - started
    rows.append(("fresh consumer loads the snapshot", f"{load:.2f} s ({len(grants):,} grants parsed)"))
    await watcher.stop()
    await consumer.drain()

    # The real thing: a proxy process started now answers /readyz 200 once its snapshot is loaded.
    ready = await proxy_ready_after(nats_url)
    rows.append(("a proxy process started now is ready (/readyz 200)", f"{ready:.2f} s"))

    # One command against the full world: how long until its change is in the bucket.
    member = next(iter(app.state.users))
    started = time.perf_counter()
    issued = app.issue_token(app.principal(member), "late")
    await projector.flush()
    rows.append(
        ("issue one token + project it (full world)", f"{(time.perf_counter() - started) * 1000:.1f} ms")
    )
    assert issued["value"]
    await nc.drain()
    app.close()
    return rows


async def proxy_ready_after(nats_url: str) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-proxy-") as data:
        env = {
            **os.environ,
            "AQUEDUCT_DEV_MODE": "true",
            "AQUEDUCT_SECRET_KEY": SECRET.decode(),
            "AQUEDUCT_NATS_URL": nats_url,
            "AQUEDUCT_DATA_DIR": data,
            "AQUEDUCT_PROXY_PORT": str(port),
            "AQUEDUCT_PROXY_REDIS_URL": "",
            "AQUEDUCT_LOG_LEVEL": "WARNING",
        }
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "aqueduct_proxy", env=env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
                while True:
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            return time.perf_counter() - started
                    except httpx.TransportError:
                        pass
                    if process.returncode is not None:
                        raise RuntimeError("the proxy exited")
                    await asyncio.sleep(0.05)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--teams", type=int, default=1_000)
    parser.add_argument("--users-per-team", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-directory-") as tmp:
        folder = Path(tmp)
        db = folder / "directory.sqlite"
        started = time.perf_counter()
        seeder = DirectoryApp(env=event_store_env(f"sqlite:///{db}", folder), secret_key=SECRET)
        seed(seeder, args.tokens, args.teams, args.users_per_team)
        seeder.close()
        seeded = time.perf_counter() - started
        server = EmbeddedNats(folder / "nats").start()
        try:
            rows = asyncio.run(measure(db, server.url))
        finally:
            server.stop()
    users = args.teams * args.users_per_team
    title = (
        f"directory: {args.tokens:,} tokens, {args.teams:,} teams, {users:,} users (seeded in {seeded:.1f} s)"
    )
    width = max(len(k) for k, _ in rows)
    print(title)
    print("-" * len(title))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
