"""The launcher's least-privilege rule, variable by variable (the e2e test reads the real processes)."""

from __future__ import annotations

from aqueduct_cli.service_env import env_for_engine, env_for_service

LAUNCHER_ENV = {
    "PATH": "/usr/bin",
    "LANG": "C.UTF-8",
    "AQUEDUCT_NATS_URL": "nats://proxy:pw@127.0.0.1:4222",
    "AQUEDUCT_DATA_DIR": "/data",
    "AQUEDUCT_SECRET_KEY": "k" * 64,
    "AQUEDUCT_DIRECTORY_URL": "http://127.0.0.1:8001",
    "AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_PASSWORD": "first-start",
    "AQUEDUCT_AUTH_OIDC_CLIENT_SECRET": "oidc-secret",
    "AQUEDUCT_AUTH_OIDC_ISSUER": "https://idp.example",
    "AQUEDUCT_PROXY_REDIS_URL": "redis://:valkey@127.0.0.1:6379/0",
    "AQUEDUCT_ACCOUNTING_CLICKHOUSE_URL": "",
    "AQUEDUCT_ACCOUNTING_REDIS_URL": "redis://:valkey@127.0.0.1:6379/0",
    "AQUEDUCT_UI_OIDC_ENABLED": "true",
    "OPENAI_API_KEY": "sk-provider",
    "AWS_SECRET_ACCESS_KEY": "cloud",
}


def test_each_service_sees_its_own_settings_and_the_common_ones() -> None:
    envs = {
        s: env_for_service(s, LAUNCHER_ENV)
        for s in ("directory", "auth", "accounting", "proxy", "batch-worker", "ui")
    }

    for env in envs.values():
        assert {"PATH", "LANG", "AQUEDUCT_NATS_URL", "AQUEDUCT_DATA_DIR", "AQUEDUCT_DIRECTORY_URL"} <= set(
            env
        )
    assert {s for s, env in envs.items() if "AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_PASSWORD" in env} == {"auth"}
    assert {s for s, env in envs.items() if "AQUEDUCT_AUTH_OIDC_CLIENT_SECRET" in env} == {"auth"}
    assert {s for s, env in envs.items() if "AQUEDUCT_AUTH_OIDC_ISSUER" in env} == {"auth", "ui"}
    assert {s for s, env in envs.items() if "AQUEDUCT_PROXY_REDIS_URL" in env} == {"proxy", "batch-worker"}
    assert {s for s, env in envs.items() if "AQUEDUCT_ACCOUNTING_REDIS_URL" in env} == {"accounting"}
    assert {s for s, env in envs.items() if "OPENAI_API_KEY" in env} == {"proxy", "batch-worker"}
    assert {s for s, env in envs.items() if "AWS_SECRET_ACCESS_KEY" in env} == {"proxy", "batch-worker"}
    assert {s for s, env in envs.items() if "AQUEDUCT_SECRET_KEY" in env} == set(envs) - {"accounting"}
    assert "AQUEDUCT_ACCOUNTING_CLICKHOUSE_URL" in envs["accounting"]
    assert "AQUEDUCT_UI_OIDC_ENABLED" not in envs["auth"]


def test_an_engine_sees_no_setting_of_the_product() -> None:
    assert env_for_engine(LAUNCHER_ENV) == {"PATH": "/usr/bin", "LANG": "C.UTF-8"}
