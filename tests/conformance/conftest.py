"""The product as ``aqueduct up`` starts it, once for the conformance suite, with its world of
principals; the route x rule table is printed at the end of the run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aqueduct_cli.embedded import free_port, wait_for_port
from tests.conformance import report
from tests.conformance.routes import ROUTES
from tests.conformance.rules import limited_cells
from tests.conformance.world import World, provision, wait_until_usable, write_config
from tests.support.jupyterhub import HUB_BIN, HUB_PROXY_BIN, running_hub
from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mcp_tools() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mcp_tools", "--port", str(port)], cwd=ROOT
    )
    wait_for_port("127.0.0.1", port, timeout=60, process=process)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


HUB_SERVICE_TOKEN = "aqueduct-conformance-service-token-0123456789"
HUB_SCOPE = "custom:ai-gateway:full-access"
# The seed's hub service and scope; a test-only role lets the suite make users and their tokens.
HUB_CONFIG = """
c.JupyterHub.load_groups = {{"staff": {{"users": ["grace"]}}}}
c.JupyterHub.custom_scopes = {{"{scope}": {{"description": "Full access to AI gateway service."}}}}
c.JupyterHub.services = [{{"name": "ai-gateway", "api_token": "{service_token}", "display": False}}]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=ai-gateway", "{scope}"]}},
    {{"name": "test-admin", "scopes": ["admin:users", "tokens"], "services": ["ai-gateway"]}},
]
"""


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A real JupyterHub's REST API URL; None when it is not installed (the rule's cells then say so)."""
    if not HUB_BIN.exists() or not HUB_PROXY_BIN.exists():
        yield None
        return
    folder = tmp_path_factory.mktemp("conformance-hub")
    with running_hub(folder, HUB_CONFIG, scope=HUB_SCOPE, service_token=HUB_SERVICE_TOKEN) as (api_url, _):
        yield api_url


@pytest.fixture(scope="session")
def conformance_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream, mcp_tools: str, hub: str | None
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("conformance")
    env = {
        # One fresh token per rate-limited cell: more than the default ten per user.
        "AQUEDUCT_DIRECTORY_MAX_TOKENS_PER_USER": "1000",
        # The body-size rule sends a body over the limit; 1 MiB keeps that cheap.
        "AQUEDUCT_PROXY_MAX_BODY_BYTES": str(1024 * 1024),
    }
    if hub is not None:  # JupyterHub users' tokens as API keys, as the README enables them
        env |= {
            "AQUEDUCT_AUTH_JUPYTERHUB_API_URL": hub,
            "AQUEDUCT_AUTH_JUPYTERHUB_REQUIRED_SCOPE": HUB_SCOPE,
            "AQUEDUCT_PROXY_JUPYTERHUB_ENABLED": "true",
        }
    stack = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url), env=env).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def world(conformance_stack: Stack, mcp_tools: str, hub: str | None) -> World:
    stack = conformance_stack
    plain_rows = [row.name for row in ROUTES]
    built = asyncio.run(
        provision(
            stack.urls,
            stack.admin_username,
            stack.admin_password,
            mcp_tools,
            limited_cells(ROUTES),
            plain_rows,
        )
    )
    unusable = {built.token("expired"), built.token("revoked"), built.token("regenerated")}
    asyncio.run(
        wait_until_usable(stack.urls["proxy"], [v for v in built.tokens.values() if v not in unusable])
    )
    built.settle_credentials()
    if hub is not None:
        built.welcome_hub_user(_hub_token(hub, "grace"), "grace")
    return built


def _hub_token(api_url: str, user: str) -> str:
    """A new API token of a hub user, like JUPYTERHUB_API_TOKEN in their server."""
    headers = {"Authorization": f"token {HUB_SERVICE_TOKEN}"}
    httpx.post(f"{api_url}/users/{user}", headers=headers, json={})  # 409 when the user exists
    answer = httpx.post(f"{api_url}/users/{user}/tokens", headers=headers, json={"note": "conformance"})
    answer.raise_for_status()
    return answer.json()["token"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if report.TABLE:
        terminalreporter.write_sep("=", "conformance: route x rule")
        for line in report.TABLE:
            terminalreporter.write_line(line)
