"""Secrets stay where they belong, in the product as `aqueduct up` runs it:

- each process it starts holds only the variables it needs (read from ``/proc/<pid>/environ``);
- after a scenario a user and an Admin go through (sign in, tokens created, used, regenerated and deleted,
  sessions refreshed and ended, a wrong password), no secret and no token value issued during it is in
  any log file or any ClickHouse table, even with debug logging.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.stack import Stack, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROVIDER_KEY = "sk-fake-upstream-key-3b9f0c2d7e"
UNRELATED_SECRET = "unrelated-password-7c1e4a9b"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("secrets")
    env = {
        "FAKE_UPSTREAM_KEY": PROVIDER_KEY,
        "SOME_OTHER_TOOL_PASSWORD": UNRELATED_SECRET,
        "AQUEDUCT_LOG_LEVEL": "DEBUG",
    }
    running = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url), env).start()
    yield running
    running.stop()


def _children(parent: int) -> dict[str, dict[str, str]]:
    """The launcher's child processes by name (service or engine), each with its environment."""
    found: dict[str, dict[str, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            if ppid != parent:
                continue
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
            raw = (proc / "environ").read_bytes().decode(errors="replace")
        except (OSError, StopIteration):
            continue
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if "-m" in argv:
            module = argv[argv.index("-m") + 1]
            name = "batch-worker" if module == "aqueduct_proxy.batches" else module.removeprefix("aqueduct_")
        else:
            name = Path(argv[0]).name
        found[name] = env
    return found


def _holders(children: dict[str, dict[str, str]], value: str) -> set[str]:
    return {name for name, env in children.items() if any(value in v for v in env.values())}


def test_each_process_holds_only_what_it_needs(stack: Stack) -> None:
    assert stack.process is not None
    children = _children(stack.process.pid)
    services = {"directory", "auth", "accounting", "proxy", "ui", "batch-worker"}
    assert services <= set(children), sorted(children)
    engines = set(children) - services
    assert any("nats" in name for name in engines) and any("valkey" in name for name in engines)
    data = stack.data_dir
    nats_passwords = json.loads((data / "nats" / "users.json").read_text())

    assert _holders(children, PROVIDER_KEY) == {"proxy", "batch-worker"}
    assert _holders(children, UNRELATED_SECRET) <= {"proxy", "batch-worker"}
    assert _holders(children, (data / "secret.key").read_text().strip()) == services - {"accounting"}
    # (the engines read their passwords from owner-only files, never from the environment)
    # (accounting reconciles the proxies' budget counters in Valkey)
    assert _holders(children, (data / "valkey.secret").read_text().strip()) == {
        "proxy",
        "batch-worker",
        "accounting",
    }
    assert _holders(children, stack.admin_password) == {"auth"}
    for service, password in nats_passwords.items():
        assert _holders(children, password) == {service}, service
    for engine in engines:
        assert not any(name.startswith("AQUEDUCT_") for name in children[engine]), engine


def _sign_in(stack: Stack, password: str) -> httpx.Response:
    return httpx.post(
        f"{stack.urls['auth']}/auth/token",
        json={"username": stack.admin_username, "password": password},
        timeout=30,
    )


def test_no_secret_or_token_in_any_log_or_table(stack: Stack) -> None:
    issued: dict[str, str] = {}
    data = stack.data_dir
    issued["secret key"] = (data / "secret.key").read_text().strip()
    issued["valkey password"] = (data / "valkey.secret").read_text().strip()
    for service, password in json.loads((data / "nats" / "users.json").read_text()).items():
        issued[f"nats password of {service}"] = password
    issued["provider key"] = PROVIDER_KEY
    issued["bootstrap password"] = stack.admin_password

    assert _sign_in(stack, "not-the-password").status_code == 401
    session = _sign_in(stack, stack.admin_password).json()
    issued["access token"], issued["refresh token"] = session["access_token"], session["refresh_token"]
    refreshed = httpx.post(
        f"{stack.urls['auth']}/auth/refresh", json={"refresh_token": session["refresh_token"]}, timeout=30
    ).json()
    issued["refreshed access token"] = refreshed["access_token"]
    issued["refreshed refresh token"] = refreshed["refresh_token"]
    stack.login_admin()
    credentials = json.loads((stack.cli_home / "credentials.json").read_text())
    for n, tokens in enumerate(credentials.values()):
        issued[f"cli access token {n}"] = tokens["access_token"]
        issued[f"cli refresh token {n}"] = tokens["refresh_token"]

    first = stack.cli("tokens", "create", "--name", "leaky", "--quiet").stdout.strip()
    issued["api token"] = first
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=first, max_retries=0)
    client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    tokens = json.loads(stack.cli("tokens", "list", "--format", "json").stdout)
    token_id = next(t["id"] for t in tokens if t["name"] == "leaky")
    second = stack.cli("tokens", "regenerate", token_id).stdout.strip()
    issued["regenerated api token"] = second
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "old"}])
    deadline = time.monotonic() + 10
    while True:  # the new value reaches the proxy through the snapshot
        try:
            openai.OpenAI(
                base_url=f"{stack.urls['proxy']}/v1", api_key=second, max_retries=0
            ).chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "new"}], max_tokens=2, stream=True
            ).close()
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    stack.cli("tokens", "delete", token_id)
    httpx.post(
        f"{stack.urls['auth']}/auth/logout", json={"refresh_token": refreshed["refresh_token"]}, timeout=30
    )
    time.sleep(2.0)  # usage and audit rows reach ClickHouse

    tables = [row["name"] for row in json.loads(stack.cli("sql", "SHOW TABLES", "--format", "json").stdout)]
    assert "usage_events" in tables
    stored = {
        table: stack.cli("sql", f"SELECT * FROM {table}", "--format", "json").stdout for table in tables
    }
    stack.cli("logout")
    logs = {str(p.relative_to(data)): p.read_text(errors="replace") for p in data.rglob("*.log")}
    assert {"logs/proxy.log", "logs/auth.log", "logs/directory.log"} <= set(logs)
    assert all(logs[name].strip() for name in ("logs/proxy.log", "logs/auth.log", "logs/directory.log"))

    places = {
        **{f"log {k}": v for k, v in logs.items()},
        **{f"table {k}": v for k, v in stored.items()},
        "runtime.json": (data / "runtime.json").read_text(),  # readable by the CLI of any folder
    }
    leaks = [
        f"{what} in {where}"
        for what, value in issued.items()
        for where, text in places.items()
        if value and (value in text or (len(value) > 24 and value[-20:] in text))
    ]
    assert not leaks


def test_aqueduct_sql_cannot_drop_a_table_or_read_the_environment(stack: Stack) -> None:
    """The attacks of issue 13, through the CLI an Admin uses: the `$$` string that hid a DROP, and
    file() on /proc/self/environ, where the secret key and provider keys were."""
    stack.login_admin()
    for attack in (
        "SELECT $$'$$; DROP TABLE usage_events; SELECT 1 --'",
        "SELECT $$'$$; INSERT INTO FUNCTION file('/tmp/aqueduct-owned', 'LineAsString') SELECT 'x'; SELECT 1 --'",
        "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
        "SELECT file('/proc/self/environ')",
    ):
        refused = stack.cli("sql", attack, check=False)
        assert refused.returncode == 2 and "400" in refused.stderr, attack
        assert PROVIDER_KEY not in refused.stdout + refused.stderr
    tables = json.loads(stack.cli("sql", "SHOW TABLES", "--format", "json").stdout)
    assert {"name": "usage_events"} in tables
    assert not Path("/tmp/aqueduct-owned").exists()
