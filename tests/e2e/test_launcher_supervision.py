"""``aqueduct up`` supervises its engines: an embedded NATS or Valkey killed with SIGKILL is started again,
on the same port with the same data, the launcher says so, and the product serves (and limits) again.

A stack of its own (its engines are killed), against the test upstream; driven with the OpenAI SDK and
the CLI as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.stack import Stack, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS_PER_MINUTE = 40


def _engine_pid(binary: str, marker: str) -> int:
    """The pid of the engine ``binary`` whose command line (or, for Valkey, process title) has ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if binary in Path(argv.split(" ", 1)[0]).name and marker in argv:
            return int(entry.name)
    raise LookupError(f"no {binary} running with {marker}")


def _nats_pid(stack: Stack) -> int:
    return _engine_pid("nats-server", f" {(stack.data_dir / 'nats').resolve()} ")


def _valkey_pid(stack: Stack) -> int:
    port = (
        json.loads((stack.data_dir / "runtime.json").read_text())["redis_url"].rsplit(":", 1)[1].split("/")[0]
    )
    return _engine_pid("valkey-server", f":{port}")


def _wait_for_output(stack: Stack, text: str, since: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stack.output[since:]:
            if text in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"the launcher never said {text!r}:\n{''.join(stack.output[since:])}")


def _ask(client: openai.OpenAI) -> str:
    answer = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "are you there"}], max_tokens=2
    )
    return answer.choices[0].message.content or ""


def _served_within(client: openai.OpenAI, timeout: float) -> float:
    """Seconds until ``client`` is served (retrying every 0.2 s), or fail after ``timeout``."""
    started = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - started < timeout:
        try:
            _ask(client)
            return time.monotonic() - started
        except openai.APIError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"not served within {timeout}s: {last}")


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("supervised")
    config = write_config(workdir / "aqueduct.yaml", upstream.url)
    config.write_text(
        config.read_text().replace(
            "requests_per_minute: 100000", f"requests_per_minute: {REQUESTS_PER_MINUTE}"
        )
    )
    running = Stack(workdir, config).start()
    running.login_admin()
    yield running
    running.stop()


def _client(stack: Stack, name: str) -> openai.OpenAI:
    value = stack.cli("tokens", "create", "--name", name, "--quiet").stdout.strip()
    return openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value, max_retries=0, timeout=10)


def test_a_killed_nats_is_restarted_on_its_port_with_its_data(supervised: Stack) -> None:
    stack = supervised
    before = _client(stack, "before-nats-kill")
    assert _ask(before)
    port = json.loads((stack.data_dir / "runtime.json").read_text())["nats_url"].rsplit(":", 1)[1]
    pid = _nats_pid(stack)

    since = len(stack.output)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    said = _wait_for_output(stack, "the embedded NATS exited", since, timeout=10)
    assert f"port {port}" in said
    back = _wait_for_output(stack, "the embedded NATS is back", since, timeout=30)
    assert f"port {port}" in back
    assert _nats_pid(stack) != pid

    # The same data: the token made before the kill is still known (auth snapshot in JetStream), and the
    # whole path (directory -> KV -> proxy) works again for a token made after it.
    assert _served_within(before, timeout=15) < 15
    after = _client(stack, "after-nats-kill")
    assert _served_within(after, timeout=10) < 10
    assert time.monotonic() - killed < 40
    logged = (stack.data_dir / "logs" / "launcher.log").read_text()
    assert "the embedded NATS exited" in logged and "the embedded NATS is back" in logged


def test_a_killed_valkey_is_restarted_and_limits_hold_again(supervised: Stack) -> None:
    stack = supervised
    client = _client(stack, "valkey-kill")
    assert _ask(client)
    pid = _valkey_pid(stack)

    since = len(stack.output)
    os.kill(pid, signal.SIGKILL)
    _wait_for_output(stack, "the embedded Valkey exited", since, timeout=10)
    _wait_for_output(stack, "the embedded Valkey is back", since, timeout=30)
    back = time.monotonic()
    assert _valkey_pid(stack) != pid

    # Limits are enforced again: within a few seconds of its return, the org's requests per minute run out
    # and the proxy refuses with 429 (served ones counted in Valkey; none can exceed the limit).
    served = 0
    refused_after = None
    while time.monotonic() - back < 20:
        try:
            _ask(client)
            served += 1
        except openai.RateLimitError:
            refused_after = time.monotonic() - back
            break
        assert served <= REQUESTS_PER_MINUTE, "the limit is not enforced after Valkey came back"
    assert refused_after is not None and refused_after < 10, (
        f"no 429 within 10 s of Valkey's return ({served})"
    )
    assert "the embedded Valkey is back" in (stack.data_dir / "logs" / "launcher.log").read_text()


def test_a_killed_service_is_restarted(supervised: Stack) -> None:
    stack = supervised
    client = _client(stack, "service-kill")
    assert _ask(client)
    since = len(stack.output)
    os.kill(_service_pid(stack, "aqueduct_proxy"), signal.SIGKILL)
    _wait_for_output(stack, "proxy exited with -9; restarting", since, timeout=10)
    assert _served_within(client, timeout=60) < 60
    assert "proxy exited with -9; restarting" in (stack.data_dir / "logs" / "launcher.log").read_text()


def _service_pid(stack: Stack, module: str) -> int:
    """The service process running ``python -m <module>`` for this stack (its AQUEDUCT_DATA_DIR)."""
    marker = f"AQUEDUCT_DATA_DIR={stack.data_dir.resolve()}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if module.encode() in argv and marker in environ:
            return int(entry.name)
    raise LookupError(f"no {module} process for {stack.data_dir}")


def test_background_services_run_at_a_lower_cpu_priority(supervised: Stack) -> None:
    """Accounting and the batch worker (every thread of them) at the launcher's priority + 10; the data
    plane (the proxy) and the control plane at the launcher's own (``AQUEDUCT_BACKGROUND_NICE``)."""
    assert supervised.process is not None
    base = os.getpriority(os.PRIO_PROCESS, supervised.process.pid)

    def nices(module: str) -> set[int]:
        pid = _service_pid(supervised, module)
        return {os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in Path(f"/proc/{pid}/task").iterdir()}

    assert nices("aqueduct_accounting") == {min(19, base + 10)}
    assert nices("aqueduct_proxy.batches") == {min(19, base + 10)}
    for module in ("aqueduct_proxy", "aqueduct_directory", "aqueduct_auth"):
        assert nices(module) == {base}, module
