"""The JupyterHub token bridge against a running JupyterHub (with its configurable-http-proxy).

A hub user's API token (what a single-user server has as JUPYTERHUB_API_TOKEN) is validated by the
hub's REST API, mapped to a directory user by the hub name and groups, and exchanged for a session
token. The hub is configured like the seed's hub service: a custom scope granted to every user.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
from auth_testing import DirectoryTestResponder
from nats.aio.client import Client as NATS

from aqueduct_cli.embedded import free_port
from aqueduct_libs import names
from aqueduct_libs.sessions import SessionVerifier
from tests.support.jupyterhub import running_hub

pytestmark = [pytest.mark.nats, pytest.mark.slow]

SERVICE_TOKEN = "aqueduct-test-service-token-0123456789abcdef"
SCOPE = "custom:aqueduct:full-access"

HUB_CONFIG = """
c.JupyterHub.load_groups = {{
    "staff": {{"users": ["ada", "grace"]}},
    "hub-admins": {{"users": ["ada"]}},
}}
c.JupyterHub.custom_scopes = {{"{scope}": {{"description": "Use the AI gateway."}}}}
# As in the seed's hub service: every user (and their servers) may use the gateway.
c.JupyterHub.services = [{{"name": "aqueduct", "api_token": "{service_token}", "display": False}}]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "{scope}"]}},
    {{"name": "aqueduct-test-admin", "scopes": ["admin:users", "tokens"], "services": ["aqueduct"]}},
]
"""


class Hub:
    def __init__(self, api_url: str, process: subprocess.Popen) -> None:
        self.api_url = api_url
        self.process = process

    def token_for(self, user: str, **body: object) -> tuple[str, str]:
        """A new API token of ``user`` (what a user creates on the hub's token page); (value, id)."""
        headers = {"Authorization": f"token {SERVICE_TOKEN}"}
        httpx.post(f"{self.api_url}/users/{user}", headers=headers, json={})  # 409 when it exists
        answer = httpx.post(
            f"{self.api_url}/users/{user}/tokens", headers=headers, json={"note": "test", **body}
        )
        answer.raise_for_status()
        return answer.json()["token"], answer.json()["id"]

    def revoke(self, user: str, token_id: str) -> None:
        headers = {"Authorization": f"token {SERVICE_TOKEN}"}
        httpx.delete(f"{self.api_url}/users/{user}/tokens/{token_id}", headers=headers).raise_for_status()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("hub")
    with running_hub(folder, HUB_CONFIG, scope=SCOPE, service_token=SERVICE_TOKEN) as (api_url, process):
        yield Hub(api_url, process)


@pytest.fixture
def bridge_client(auth_client, hub: Hub):
    def factory(**overrides):
        return auth_client(jupyterhub_api_url=hub.api_url, jupyterhub_admin_group="hub-admins", **overrides)

    return factory


async def exchange(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/jupyterhub/exchange", json={"token": token})


async def test_a_hub_users_token_becomes_a_directory_user_and_a_session(
    bridge_client, hub: Hub, nc: NATS, directory: DirectoryTestResponder
) -> None:
    grace_token, _ = hub.token_for("grace")
    async with bridge_client(jupyterhub_required_scope=SCOPE) as client:
        answer = await exchange(client, grace_token)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["user"]["user_id"] == directory.user_id("jupyterhub:grace")
        assert body["user"]["org_id"] == "org-staff" and body["user"]["admin"] is False
        assert directory.last("jupyterhub:grace") == {
            "subject": "jupyterhub:grace",
            "email": "",
            "name": "grace",
            "groups": ["staff"],
            "admin": False,
            "email_verified": False,
            "renewal": False,
        }
        kv = await nc.jetstream().key_value(names.AUTH_KEYS_BUCKET)
        verifier = SessionVerifier()
        verifier.load_jwks((await kv.get("jwks")).value or b"")
        assert verifier.verify(body["access_token"]).org == "org-staff"

        ada_token, _ = hub.token_for("ada")
        ada = await exchange(client, ada_token)
        assert ada.status_code == 200 and ada.json()["user"]["admin"] is True

        narrow, _ = hub.token_for("grace", scopes=["read:users:groups!user"])
        refused = await exchange(client, narrow)
        assert refused.status_code == 401 and SCOPE in refused.json()["detail"]


async def test_bad_tokens_and_unmapped_users_are_refused(bridge_client, hub: Hub) -> None:
    linus_token, _ = hub.token_for("linus")
    async with bridge_client() as client:
        bogus = await exchange(client, "0123456789abcdef0123456789abcdef")
        assert bogus.status_code == 401 and bogus.json()["code"] == "invalid_jupyterhub_token"
        service = await exchange(client, SERVICE_TOKEN)
        assert service.status_code == 401 and "user's token" in service.json()["detail"]
        unmapped = await exchange(client, linus_token)
        assert unmapped.status_code == 403
        assert unmapped.json()["detail"].startswith("No organisation is mapped from your groups")


async def test_the_hub_is_asked_once_per_cache_window(bridge_client, hub: Hub) -> None:
    token, token_id = hub.token_for("grace")
    async with (
        bridge_client(jupyterhub_cache_seconds=60) as cached,
        bridge_client(jupyterhub_cache_seconds=0) as uncached,
    ):
        first = await exchange(cached, token)
        assert (await exchange(uncached, token)).status_code == 200
        hub.revoke("grace", token_id)
        # Within the window the cached answer stands (the hub is not asked again) ...
        again = await exchange(cached, token)
        assert again.status_code == 200 and again.json()["access_token"] == first.json()["access_token"]
        # ... without a window the revocation shows at once.
        assert (await exchange(uncached, token)).status_code == 401


async def test_an_unreachable_hub_is_a_503(auth_client) -> None:
    async with auth_client(jupyterhub_api_url=f"http://127.0.0.1:{free_port()}/hub/api") as client:
        answer = await exchange(client, "0123456789abcdef")
    assert answer.status_code == 503 and answer.json()["code"] == "jupyterhub_unavailable"


async def test_the_bridge_is_off_without_a_hub(auth_client) -> None:
    async with auth_client() as client:
        assert (await exchange(client, "whatever")).status_code == 403
