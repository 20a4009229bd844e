"""``aqueduct up``: the whole product on one machine, on embedded defaults.

Starts NATS (JetStream) and Valkey from their PyPI packages unless URLs are configured, then each
service as its own process, waits until every part is ready, prints where everything is, and supervises:
a service that dies is restarted, and so is an embedded NATS or Valkey (same port, same data;
``aqueduct_cli.supervision``), each said on the output and in ``logs/launcher.log``. Ctrl-C (or SIGTERM)
stops every process it started.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from aqueduct_cli.client import forget_running_product, record_running_product
from aqueduct_cli.embedded import EmbeddedNats, EmbeddedValkey, free_port
from aqueduct_cli.nats_users import SERVICE_USERS
from aqueduct_cli.service_env import env_for_service
from aqueduct_cli.supervision import EngineWatch, launcher_log
from aqueduct_libs.redact import redact

__all__ = ["BACKGROUND", "SERVICES", "WORKERS", "LaunchOptions", "Launcher", "background_nice"]

# Start order matters only for readiness: the directory first (it owns the snapshot), the UI last.
SERVICES: tuple[str, ...] = ("directory", "auth", "accounting", "proxy", "ui")
# Background workers, supervised like the services (their port serves /healthz, /readyz, /metrics only):
# name -> module.
WORKERS: dict[str, str] = {"batch-worker": "aqueduct_proxy.batches"}
PREFERRED_PORTS = {
    "proxy": 8000,
    "directory": 8001,
    "auth": 8002,
    "accounting": 8003,
    "batch-worker": 8004,
    "ui": 8080,
}

# Background work, started at a lower CPU priority (``AQUEDUCT_BACKGROUND_NICE``, 0 to 19, default 10; 0
# keeps every process at the launcher's): accounting (its once-a-second ClickHouse store takes 10-20 ms of
# CPU in one go) and the batch worker. Where they share a core with the proxy, the scheduler then runs a
# request that arrives before it finishes their turn, instead of after; under full load they still get
# their share (a niced process is not starved, and accounting keeps up: see README, Benchmarks).
BACKGROUND: frozenset[str] = frozenset({"accounting", "batch-worker"})
BACKGROUND_NICE = 10

RUNTIME_FILE = "runtime.json"
INITIALIZED_MARK = "initialized"
SECRET_KEY_FILE = "secret.key"
# Each service's password on the embedded NATS server, owner-only, next to the server's auth.conf.
NATS_USERS_FILE = Path("nats") / "users.json"
BOOTSTRAP_ADMIN = "admin"


def _env_name(service: str) -> str:
    """``batch-worker`` -> ``BATCH_WORKER``, as in ``AQUEDUCT_BATCH_WORKER_PORT``."""
    return service.upper().replace("-", "_")


def _port_is_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """Child processes get SIGTERM if the launcher dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def background_nice(env: dict[str, str]) -> int:
    """How much lower the background services' CPU priority is (``AQUEDUCT_BACKGROUND_NICE``)."""
    raw = env.get("AQUEDUCT_BACKGROUND_NICE", "").strip()
    if not raw:
        return BACKGROUND_NICE
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ValueError(f"AQUEDUCT_BACKGROUND_NICE must be a whole number from 0 to 19, not {raw!r}.")
    return value


def _start_child(nice: int) -> None:
    """In the child, before it runs the service: its priority (all its threads inherit it), its end."""
    if nice:
        os.nice(nice)
    _die_with_parent()


@dataclass
class LaunchOptions:
    data_dir: Path
    config_file: Path | None
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    ready_timeout: float = 90.0  # seconds each group of processes has to answer /readyz


@dataclass
class ServiceProcess:
    name: str
    port: int
    module: str = ""
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0


class Launcher:
    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.data_dir = options.data_dir.resolve()
        self.env = options.env
        self.nats: EmbeddedNats | None = None
        self.valkey: EmbeddedValkey | None = None
        self.services: dict[str, ServiceProcess] = {}
        self.urls: dict[str, str] = {}
        # Each service's own NATS address (with its user and password) on the embedded server.
        self.nats_urls: dict[str, str] = {}
        self._stopping = False
        self.background_nice = background_nice(self.env)  # a bad value stops ``up`` before it starts

    # ---- set-up -------------------------------------------------------------------------------

    def _secret_key(self) -> str:
        if configured := self.env.get("AQUEDUCT_SECRET_KEY"):
            return configured
        path = self.data_dir / SECRET_KEY_FILE
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def _engine_secret(self, name: str) -> str:
        """A random credential for an embedded engine, kept (owner-only) so restarts reuse it."""
        path = self.data_dir / f"{name}.secret"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(24))
        return path.read_text().strip()

    def _nats_passwords(self) -> dict[str, str]:
        """One random password per service, made at first start and kept (owner-only) for restarts."""
        path = self.data_dir / NATS_USERS_FILE
        passwords: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        if missing := [s for s in SERVICE_USERS if not passwords.get(s)]:
            passwords.update({service: secrets.token_hex(24) for service in missing})
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(passwords, handle, indent=2)
        return {service: passwords[service] for service in SERVICE_USERS}

    def _choose_port(self, service: str) -> int:
        configured = self.env.get(f"AQUEDUCT_{_env_name(service)}_PORT")
        if configured:
            return int(configured)
        preferred = PREFERRED_PORTS[service]
        return preferred if _port_is_free(self.options.host, preferred) else free_port(self.options.host)

    def _start_engines(self) -> tuple[str, str]:
        logs = self.data_dir / "logs"
        nats_url = self.env.get("AQUEDUCT_NATS_URL")
        if not nats_url:
            self.nats = EmbeddedNats(
                self.data_dir / "nats",
                port=int(self.env.get("AQUEDUCT_NATS_PORT", 0)) or None,
                users=self._nats_passwords(),
            )
            self.nats.start(log_file=logs / "nats.log")
            nats_url = self.nats.url  # no credentials: each service gets its own below
            self.nats_urls = {service: self.nats.url_for(service) for service in SERVICE_USERS}
            # The one shared token of earlier versions opens nothing any more.
            (self.data_dir / "nats.secret").unlink(missing_ok=True)
        redis_url = self.env.get("AQUEDUCT_PROXY_REDIS_URL") or self.env.get("AQUEDUCT_REDIS_URL")
        if not redis_url:
            self.valkey = EmbeddedValkey(
                self.data_dir / "valkey",
                port=int(self.env.get("AQUEDUCT_VALKEY_PORT", 0)) or None,
                password=self._engine_secret("valkey"),
            )
            self.valkey.start(log_file=logs / "valkey.log")
            redis_url = self.valkey.url
        return nats_url, redis_url

    def _service_env(
        self, nats_url: str, redis_url: str, first_start: bool, admin_password: str
    ) -> dict[str, str]:
        env = dict(self.env)
        env.setdefault("AQUEDUCT_DEV_MODE", "true")
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        env.update(
            {
                "AQUEDUCT_NATS_URL": nats_url,
                "AQUEDUCT_PROXY_REDIS_URL": redis_url,
                # Accounting reconciles the proxies' budget counters in the same Valkey.
                "AQUEDUCT_ACCOUNTING_REDIS_URL": redis_url,
                "AQUEDUCT_DATA_DIR": str(self.data_dir),
                "AQUEDUCT_SECRET_KEY": self._secret_key(),
                "AQUEDUCT_DIRECTORY_URL": self.urls["directory"],
                "AQUEDUCT_AUTH_URL": self.urls["auth"],
                "AQUEDUCT_ACCOUNTING_URL": self.urls["accounting"],
                "AQUEDUCT_PROXY_URL": self.urls["proxy"],
                "AQUEDUCT_PUBLIC_UI_URL": env.get("AQUEDUCT_PUBLIC_UI_URL", self.urls["ui"]),
            }
        )
        if self.options.config_file:
            env["AQUEDUCT_CONFIG_FILE"] = str(self.options.config_file.resolve())
        for name, service in self.services.items():
            env[f"AQUEDUCT_{_env_name(name)}_HOST"] = self.options.host
            env[f"AQUEDUCT_{_env_name(name)}_PORT"] = str(service.port)
        env.pop("AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_PASSWORD", None)
        if first_start:
            env["AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_USERNAME"] = BOOTSTRAP_ADMIN
            env["AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_PASSWORD"] = admin_password
        return env

    def _spawn(self, service: ServiceProcess, env: dict[str, str]) -> None:
        if own := self.nats_urls.get(service.name):
            env = {**env, "AQUEDUCT_NATS_URL": own}
        env = env_for_service(service.name, env)
        log = open(self.data_dir / "logs" / f"{service.name}.log", "ab")
        service.process = subprocess.Popen(
            [sys.executable, "-m", service.module or f"aqueduct_{service.name}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=partial(_start_child, self.background_nice if service.name in BACKGROUND else 0),
        )
        service.started_at = time.monotonic()
        log.close()

    def _wait_ready(self, names: tuple[str, ...]) -> None:
        timeout = self.options.ready_timeout
        deadline = time.monotonic() + timeout
        pending = set(names)
        with httpx.Client(timeout=2.0) as client:
            while pending and time.monotonic() < deadline:
                for name in sorted(pending):
                    service = self.services[name]
                    if service.process is not None and service.process.poll() is not None:
                        raise RuntimeError(
                            f"{name} exited with {service.process.returncode}:\n{self._log_tail(name)}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{self.urls[name]}/readyz").status_code == 200:
                            pending.discard(name)
                time.sleep(0.2)
        if pending:
            details = "\n".join(f"--- {n} ---\n{self._log_tail(n)}" for n in sorted(pending))
            raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}\n{details}")

    def _log_tail(self, name: str, lines: int = 30) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> dict[str, object]:
        """Start everything and wait until ready. Returns what ``up`` prints."""
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        first_start = not (self.data_dir / INITIALIZED_MARK).exists()
        admin_password = secrets.token_urlsafe(12) if first_start else ""
        nats_url, redis_url = self._start_engines()
        for name in (*SERVICES, *WORKERS):
            self.services[name] = ServiceProcess(name, self._choose_port(name), WORKERS.get(name, ""))
            self.urls[name] = f"http://{self.options.host}:{self.services[name].port}"
        self._env = self._service_env(nats_url, redis_url, first_start, admin_password)
        for name in SERVICES:
            self._spawn(self.services[name], self._env)
        self._wait_ready(SERVICES)
        for name in WORKERS:
            self._spawn(self.services[name], self._env)
        self._wait_ready(tuple(WORKERS))
        (self.data_dir / INITIALIZED_MARK).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        # The bootstrap password is only ever handed to the auth service on the very first start.
        self._env.pop("AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_PASSWORD", None)
        runtime = {
            "urls": self.urls,
            "nats_url": nats_url,
            "redis_url": redact(redis_url),  # the address; the password stays with the proxy
            "data_dir": str(self.data_dir),
            "pid": os.getpid(),
        }
        (self.data_dir / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2))
        record_running_product(self.urls, self.data_dir, os.getpid())
        return {
            **runtime,
            "first_start": first_start,
            "admin_username": BOOTSTRAP_ADMIN,
            "admin_password": admin_password,
        }

    def supervise(self) -> None:
        """Restart an engine or a service that dies (with backoff) until asked to stop."""
        say = launcher_log(self.data_dir)
        engines = EngineWatch(self.data_dir, say)
        engines.watch("NATS", self.nats)
        engines.watch("Valkey", self.valkey)
        while not self._stopping:
            engines.check()
            for service in self.services.values():
                process = service.process
                if process is None or process.poll() is None or self._stopping:
                    continue
                backoff = min(30.0, 0.5 * 2 ** min(service.restarts, 6))
                if time.monotonic() - service.started_at < backoff:
                    continue
                say(f"{service.name} exited with {process.returncode}; restarting")
                service.restarts += 1
                self._spawn(service, self._env)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stopping = True
        running = [
            s.process for s in reversed(self.services.values()) if s.process and s.process.poll() is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for engine in (self.valkey, self.nats):
            if engine is not None:
                engine.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / RUNTIME_FILE).unlink()
        forget_running_product(os.getpid())

    def request_stop(self, *_: object) -> None:
        self._stopping = True
