"""The whole product, started the way the README says (``aqueduct up``), in a temporary folder."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from aqueduct_cli.embedded import free_port

__all__ = ["Stack", "write_config"]

ROOT = Path(__file__).resolve().parents[2]
AQUEDUCT = str(Path(sys.executable).parent / "aqueduct")


def write_config(path: Path, upstream_url: str, extra: str = "") -> Path:
    path.write_text(
        f"""\
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
    limits: {{requests_per_minute: 100000, input_tokens_per_minute: 100000000, output_tokens_per_minute: 100000000}}
    teams:
      - name: research
        description: Research group
{extra}"""
    )
    return path


class Stack:
    """``aqueduct up`` as a child process; ``urls``, admin credentials and a CLI runner."""

    def __init__(self, workdir: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / ".aqueduct"
        self.config = config
        self.cli_home = workdir / "cli-home"
        self.urls: dict[str, str] = {}
        self.admin_username = "admin"
        self.admin_password = ""
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._ports = {
            name: free_port() for name in ("proxy", "directory", "auth", "accounting", "ui", "batch_worker")
        }
        self.env = {
            **os.environ,
            "AQUEDUCT_DATA_DIR": str(self.data_dir),
            "AQUEDUCT_CLI_HOME": str(self.cli_home),
            "FAKE_UPSTREAM_KEY": "sk-fake-upstream-key",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **{f"AQUEDUCT_{name.upper()}_PORT": str(port) for name, port in self._ports.items()},
            **(env or {}),
        }
        for name in ("NATS_URL", "PROXY_REDIS_URL", "REDIS_URL", "SECRET_KEY", "CONFIG_FILE"):
            if not (env or {}).get(f"AQUEDUCT_{name}"):
                self.env.pop(f"AQUEDUCT_{name}", None)

    def start(self, timeout: float = 120.0) -> Stack:
        self.output = []
        self.process = subprocess.Popen(
            [AQUEDUCT, "up", "--config", str(self.config)],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.process and self.process.stdout
            for line in self.process.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("aqueduct up exited:\n" + "".join(self.output))
            if match := re.match(r"\s+(proxy|directory|auth|accounting|ui)\s+(http://\S+)", line):
                self.urls[match.group(1)] = match.group(2)
            if match := re.match(r"\s+password: (\S+)", line):
                self.admin_password = match.group(1)
            if line.startswith("Press Ctrl-C to stop."):
                # The batch worker's health port (not printed: it serves no user).
                self.urls["batch-worker"] = f"http://127.0.0.1:{self._ports['batch_worker']}"
                return self
        raise TimeoutError("aqueduct up did not become ready:\n" + "".join(self.output))

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def cli(
        self, *args: str, input: str | None = None, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``aqueduct`` CLI in the stack's folder, as the README shows it."""
        result = subprocess.run(
            [AQUEDUCT, *args],
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"aqueduct {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def login_admin(self) -> None:
        self.cli(
            "login", "--username", self.admin_username, "--password-stdin", input=self.admin_password + "\n"
        )
