"""``free_port`` picks ports that outgoing connections cannot take before a server binds them."""

import socket
from pathlib import Path

import pytest

from aqueduct_cli import embedded
from aqueduct_cli.embedded import free_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="Linux only: the ephemeral range is read from /proc")
def test_ports_lie_below_the_ephemeral_range_and_are_free() -> None:
    low = int(RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50  # never the same port twice in one process
    for port in ports:
        assert 10_000 <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # still free: nothing was left bound to it


@pytest.mark.skipif(not RANGE.exists(), reason="Linux only: the ephemeral range is read from /proc")
def test_a_port_taken_by_a_listener_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(embedded, "_listening_range", lambda: (port, port))
        monkeypatch.setattr(embedded, "_given", set())
        for _ in range(5):
            assert free_port() != port  # the range holds only the taken port: the kernel picks instead


def test_without_the_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded, "_EPHEMERAL_RANGE", tmp_path / "missing")
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
