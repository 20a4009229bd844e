"""A real JupyterHub (with configurable-http-proxy) for the tests of the JupyterHub token bridge.

Installed by ``services/auth/tests/jupyterhub/install.sh`` (``make test-deps`` runs it); tests skip
with a clear reason when it is absent. Each test module brings its own ``jupyterhub_config.py``
template (users, groups and the service as in the seed); this module only runs the hub.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aqueduct_cli.embedded import free_port, wait_for_port

__all__ = ["BASE_CONFIG", "HUB_BIN", "HUB_PROXY_BIN", "running_hub"]

HUB_DIR = Path(__file__).resolve().parents[2] / "services" / "auth" / "tests" / "jupyterhub"
HUB_BIN = HUB_DIR / ".venv" / "bin" / "jupyterhub"
HUB_PROXY_BIN = HUB_DIR / "node_modules" / ".bin" / "configurable-http-proxy"


# What every test hub shares: its own free ports and files, the test proxy, and any user may sign in.
BASE_CONFIG = """\
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.Authenticator.allow_all = True
c.JupyterHub.db_url = "sqlite:///{folder}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{folder}/cookie_secret"
c.JupyterHub.pid_file = "{folder}/hub.pid"
"""


@contextmanager
def running_hub(folder: Path, config_template: str, **fields: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the hub with ``BASE_CONFIG`` followed by the module's ``config_template`` (its users,
    groups, scopes and services; ``str.format`` fields: ``fields``); yield its REST API URL and process."""
    if not HUB_BIN.exists() or not HUB_PROXY_BIN.exists():
        pytest.skip("JupyterHub is not installed: run services/auth/tests/jupyterhub/install.sh")
    hub_port = free_port()
    config = BASE_CONFIG.format(
        public_port=free_port(),
        hub_port=hub_port,
        proxy_api_port=free_port(),
        proxy=str(HUB_PROXY_BIN),
        folder=folder,
    ) + config_template.format(**fields)
    (folder / "jupyterhub_config.py").write_text(config)
    with open(folder / "hub.log", "wb") as log:
        process = subprocess.Popen(
            [str(HUB_BIN), "-f", str(folder / "jupyterhub_config.py")],
            cwd=folder,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{hub_port}/hub/api"
    try:
        wait_for_port("127.0.0.1", hub_port, timeout=60, process=process)
        deadline = time.monotonic() + 30
        while httpx.get(f"{api_url}/").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield api_url, process
    finally:
        process.terminate()  # the hub stops its proxy on the way out
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
