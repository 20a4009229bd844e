"""docker-compose.yml stays valid (there is no Docker engine here, so the file is read, not run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose_command() -> list[str]:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip(
        "neither `docker compose` nor `docker-compose` is installed (.ci/run installs docker-compose)"
    )


def test_compose_file_is_valid_with_the_example_env() -> None:
    result = subprocess.run(
        [
            *_compose_command(),
            "--env-file",
            "infra/compose.env.example",
            "-f",
            "docker-compose.yml",
            "config",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"nats", "valkey", "postgres", "clickhouse", "dex"} <= set(services)
    for name in ("directory", "auth", "accounting", "proxy", "ui"):
        assert services[name]["build"]["dockerfile"].endswith("infra/docker/Dockerfile")
        assert services[name]["command"] == [name]
    assert services["directory"]["environment"]["AQUEDUCT_DIRECTORY_DATABASE_URL"].startswith("postgresql://")
    assert services["accounting"]["environment"]["AQUEDUCT_ACCOUNTING_CLICKHOUSE_URL"].startswith("http://")


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [*_compose_command(), "--env-file", str(empty), "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "AQUEDUCT_SECRET_KEY" in result.stderr or "set " in result.stderr


# Which secret each container may hold (the variable names of infra/compose.env.example).
_SECRETS_FOR = {
    "directory": {"AQUEDUCT_SECRET_KEY", "NATS_DIRECTORY_PASSWORD", "POSTGRES_PASSWORD"},
    "auth": {"AQUEDUCT_SECRET_KEY", "NATS_AUTH_PASSWORD", "AQUEDUCT_OIDC_CLIENT_SECRET"},
    # Valkey: it reconciles the proxies' budget counters.
    "accounting": {
        "NATS_ACCOUNTING_PASSWORD",
        "CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_ANALYST_PASSWORD",
        "VALKEY_PASSWORD",
    },
    "proxy": {
        "AQUEDUCT_SECRET_KEY",
        "NATS_PROXY_PASSWORD",
        "VALKEY_PASSWORD",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
    },
    "batch-worker": {
        "AQUEDUCT_SECRET_KEY",
        "NATS_BATCH_WORKER_PASSWORD",
        "VALKEY_PASSWORD",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
    },
    "ui": {"AQUEDUCT_SECRET_KEY", "NATS_UI_PASSWORD"},
}


def test_each_service_gets_only_its_own_secrets(tmp_path: Path) -> None:
    names = [
        line.split("=", 1)[0]
        for line in (ROOT / "infra/compose.env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ] + ["ANTHROPIC_API_KEY"]
    # A distinct, recognisable value per secret, so each can be traced to the containers that get it.
    values = {name: f"{name.lower().replace('_', '')}{'0' * 40}" for name in names}
    env_file = tmp_path / "distinct.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    result = subprocess.run(
        [*_compose_command(), "--env-file", str(env_file), "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]

    for service, allowed in _SECRETS_FOR.items():
        environment = " ".join(f"{k}={v}" for k, v in services[service]["environment"].items())
        held = {name for name, value in values.items() if value in environment}
        assert held == allowed, service


def test_the_cluster_override_makes_three_routed_nodes_and_three_replicas() -> None:
    result = subprocess.run(
        [
            *_compose_command(),
            "--env-file",
            "infra/compose.env.example",
            "-f",
            "docker-compose.yml",
            "-f",
            "docker-compose.cluster.yml",
            "config",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    nodes = ("nats", "nats-2", "nats-3")
    routes = "nats://nats:6222,nats://nats-2:6222,nats://nats-3:6222"
    for node in nodes:
        assert services[node]["command"][-2:] == ["--routes", routes]
    assert len({services[node]["environment"]["SERVER_NAME"] for node in nodes}) == 3
    assert len({str(services[node]["volumes"]) for node in nodes}) == 3, "each node keeps its own store"
    for name in ("directory", "auth", "accounting", "proxy", "batch-worker", "ui"):
        environment = services[name]["environment"]
        assert str(environment["AQUEDUCT_NATS_REPLICAS"]) == "3"
        addresses = environment["AQUEDUCT_NATS_URL"].split(",")
        assert [a.rsplit("@", 1)[-1].removeprefix("nats://") for a in addresses] == [
            f"{node}:4222" for node in nodes
        ]
        assert addresses[0].startswith(f"nats://{name}:"), "each service keeps its own NATS user"
