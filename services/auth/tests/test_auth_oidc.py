"""Single sign-on end to end against a real OpenID provider (the npm package ``oidc-provider``).

The browser is played by httpx: it follows the redirects, fills in the provider's login form, and stops
at the UI (``/session/complete`` or ``/session/error``), where the UI would take over. The Chromium
version of this journey belongs to the UI's tests.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, DirectoryTestResponder
from nats.aio.client import Client as NATS

from aqueduct_auth.adapters.oidc import safe_next
from aqueduct_cli.embedded import free_port, wait_for_port
from aqueduct_libs import names
from aqueduct_libs.sessions import SessionVerifier

pytestmark = [pytest.mark.nats, pytest.mark.slow]

PROVIDER_DIR = Path(__file__).parent / "oidc"
CLIENT_ID = "aqueduct"
CLIENT_SECRET = "test-client-secret-for-the-oidc-provider"
AUTH_BASE = "http://auth.test"
UI_HOST = "ui.test"


class Provider:
    def __init__(self, issuer: str, process: subprocess.Popen) -> None:
        self.issuer = issuer
        self.process = process


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the OIDC tests need Node.js 20+ to run oidc-provider")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("oidc-provider is not installed: run services/auth/tests/oidc/install.sh (npm ci)")
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URI": f"{AUTH_BASE}/auth/oidc/callback",
        "POST_LOGOUT_REDIRECT_URI": f"http://{UI_HOST}/login",
    }
    log = tmp_path_factory.mktemp("oidc") / "provider.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [node, str(PROVIDER_DIR / "provider.mjs")], cwd=PROVIDER_DIR, env=env, stdout=out, stderr=out
        )
    try:
        wait_for_port("127.0.0.1", port, process=process)
        yield Provider(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        process.wait(10)


async def browse_to_ui(client: httpx.AsyncClient, url: str, username: str, password: str) -> httpx.URL:
    """Follow redirects like a browser, sign in on the provider's form, stop when the UI is reached."""
    response = await client.get(url)
    for _ in range(20):
        if response.is_redirect:
            target = httpx.URL(urljoin(str(response.url), response.headers["location"]))
            if target.host == UI_HOST:
                return target
            response = await client.get(target)
            continue
        assert response.status_code == 200, f"{response.status_code} at {response.url}: {response.text[:300]}"
        action = re.search(r'<form method="post" action="([^"]+)"', response.text)
        assert action, f"no sign-in form at {response.url}"
        response = await client.post(
            urljoin(str(response.url), action.group(1)), data={"login": username, "password": password}
        )
    raise AssertionError("too many redirects")


@pytest.fixture
def sso_client(auth_client, oidc_provider: Provider):
    def factory(**overrides):
        return auth_client(
            oidc_issuer=oidc_provider.issuer,
            oidc_client_id=CLIENT_ID,
            oidc_client_secret=CLIENT_SECRET,
            oidc_admin_group="admins",
            **overrides,
        )

    return factory


def browser_for(auth: httpx.AsyncClient) -> httpx.AsyncClient:
    """One cookie jar; requests to the auth service go to the app in-process, the rest over the network."""
    transport = auth._transport  # the ASGI transport of the auth app
    return httpx.AsyncClient(mounts={AUTH_BASE: transport}, timeout=10)


# What the UI's /login/sso gives the browser (cookie) and the auth service (its SHA-256).
BROWSER_SECRET = "the-secret-only-this-browser-holds"
BINDING = hashlib.sha256(BROWSER_SECRET.encode()).hexdigest()


async def sign_in_via_sso(
    auth: httpx.AsyncClient, username: str, password: str, next_path: str, binding: str = BINDING
) -> httpx.URL:
    async with browser_for(auth) as browser:
        return await browse_to_ui(
            browser, f"{AUTH_BASE}/auth/oidc/login?next={next_path}&binding={binding}", username, password
        )


async def verify_with_kv(nc: NATS, token: str):
    kv = await nc.jetstream().key_value(names.AUTH_KEYS_BUCKET)
    verifier = SessionVerifier()
    verifier.load_jwks((await kv.get("jwks")).value or b"")
    return verifier.verify(token)


async def test_a_staff_member_lands_in_the_org_of_their_group(
    sso_client, oidc_provider: Provider, nc: NATS, directory: DirectoryTestResponder
) -> None:
    async with sso_client() as auth:
        landed = await sign_in_via_sso(auth, "alice", "alice-password", "/tokens")
        assert landed.path == "/session/complete"
        query = parse_qs(landed.query.decode())
        assert query["next"] == ["/tokens"]
        subject = f"oidc:{oidc_provider.issuer}:alice"
        assert directory.last(subject) == {
            "subject": subject,
            "email": "alice@example.org",
            "name": "Alice Staff",
            "groups": ["staff"],
            "admin": False,
            "email_verified": True,  # the provider says so
            "renewal": False,  # a sign-in: the directory re-evaluates the roles the groups grant
        }

        # The UI exchanges the one-time code server-side for the token pair.
        exchanged = await auth.post(
            "/auth/exchange", json={"code": query["code"][0], "binding": BROWSER_SECRET}
        )
        assert exchanged.status_code == 200, exchanged.text
        claims = await verify_with_kv(nc, exchanged.json()["access_token"])
        assert (claims.sub, claims.org, claims.admin) == (directory.user_id(subject), "org-staff", False)
        again = await auth.post("/auth/exchange", json={"code": query["code"][0], "binding": BROWSER_SECRET})
        assert again.status_code == 401 and again.json()["code"] == "invalid_code"
        # The SSO session refreshes like any other.
        refreshed = await auth.post(
            "/auth/refresh", json={"refresh_token": exchanged.json()["refresh_token"]}
        )
        assert refreshed.status_code == 200
        # A refresh replays the sign-in's claims as a renewal: the directory changes no role for it.
        assert directory.last(subject)["renewal"] is True


async def test_a_member_of_the_admin_group_is_admin(
    sso_client, oidc_provider: Provider, nc: NATS, directory: DirectoryTestResponder
) -> None:
    async with sso_client() as auth:
        landed = await sign_in_via_sso(auth, "root", "root-password", "/")
        assert landed.path == "/session/complete"
        subject = f"oidc:{oidc_provider.issuer}:root"
        assert directory.last(subject)["groups"] == ["admins", "staff"]
        assert directory.last(subject)["admin"] is True
        code = parse_qs(landed.query.decode())["code"][0]
        claims = await verify_with_kv(
            nc,
            (await auth.post("/auth/exchange", json={"code": code, "binding": BROWSER_SECRET})).json()[
                "access_token"
            ],
        )
        assert claims.admin is True and claims.org == "org-staff"


async def test_a_user_with_no_mapped_group_gets_a_clear_message(sso_client) -> None:
    async with sso_client() as auth:
        landed = await sign_in_via_sso(auth, "nobody", "nobody-password", "/tokens")
    assert landed.path == "/session/error"
    # A reason code only: the UI shows its own text for it, never words carried in the address.
    assert parse_qs(landed.query.decode()) == {"reason": ["no_org"]}


async def test_a_forged_callback_ends_at_the_error_page_not_a_500(sso_client) -> None:
    async with sso_client() as auth:
        answer = await auth.get("/auth/oidc/callback?code=forged&state=forged")
    assert answer.status_code == 303
    landed = httpx.URL(answer.headers["location"])
    assert (landed.host, landed.path) == (UI_HOST, "/session/error")
    assert parse_qs(landed.query.decode()) == {"reason": ["sso_failed"]}


async def test_an_unreachable_provider_ends_at_the_error_page(auth_client) -> None:
    async with auth_client(oidc_issuer=f"http://127.0.0.1:{free_port()}", oidc_client_id="x") as auth:
        answer = await auth.get(f"/auth/oidc/login?next=/tokens&binding={BINDING}")
    assert answer.status_code == 303
    assert urlsplit(answer.headers["location"]).path == "/session/error"
    assert parse_qs(urlsplit(answer.headers["location"]).query) == {"reason": ["idp_unreachable"]}


def test_next_only_leads_inside_the_ui() -> None:
    assert safe_next("/tokens?tab=2") == "/tokens?tab=2"
    for hostile in ("//evil.example/x", "https://evil.example", "/\\evil.example", "", None, "tokens"):
        assert safe_next(hostile) == "/"


async def test_a_code_only_signs_in_the_browser_that_started_the_sign_in(sso_client) -> None:
    """Login CSRF: an attacker signs in on their own account and sends the victim the hand-off link. The
    victim's browser does not hold the attacker's secret, so the code is refused there; it is not spent,
    and still works with the right secret."""
    async with sso_client() as auth:
        landed = await sign_in_via_sso(auth, "alice", "alice-password", "/")
        code = parse_qs(landed.query.decode())["code"][0]
        for wrong in (
            {"code": code},
            {"code": code, "binding": "another-browser's-secret"},
            {"code": code, "binding": BINDING},
        ):
            refused = await auth.post("/auth/exchange", json=wrong)
            assert refused.status_code == 401 and refused.json()["code"] == "invalid_code"
        right = await auth.post("/auth/exchange", json={"code": code, "binding": BROWSER_SECRET})
        assert right.status_code == 200, right.text


async def test_a_sign_in_not_started_by_the_ui_is_refused(sso_client) -> None:
    async with sso_client() as auth:
        for query in ("next=/", "next=/&binding=short", f"next=/&binding={BINDING.upper()}"):
            answer = await auth.get(f"/auth/oidc/login?{query}")
            assert answer.status_code == 303
            landed = httpx.URL(answer.headers["location"])
            assert (landed.host, landed.path) == (UI_HOST, "/session/error")
            assert parse_qs(landed.query.decode()) == {"reason": ["not_started_here"]}


async def _start_sso(browser: httpx.AsyncClient) -> tuple[httpx.URL, bool]:
    """Start single sign-on as alice; where the browser lands at the UI, and whether the provider asked
    for her password (False: it signed her in from its own session)."""
    response = await browser.get(f"{AUTH_BASE}/auth/oidc/login?next=/&binding={BINDING}")
    asked = False
    for _ in range(20):
        if response.is_redirect:
            target = httpx.URL(urljoin(str(response.url), response.headers["location"]))
            if target.host == UI_HOST:
                return target, asked
            response = await browser.get(target)
            continue
        action = re.search(r'<form method="post" action="([^"]+)"', response.text)
        assert action, f"no sign-in form at {response.url}: {response.text[:300]}"
        asked = True
        response = await browser.post(
            urljoin(str(response.url), action.group(1)), data={"login": "alice", "password": "alice-password"}
        )
    raise AssertionError("too many redirects")


async def _exchange(auth: httpx.AsyncClient, landed: httpx.URL) -> dict:
    code = parse_qs(landed.query.decode())["code"][0]
    answer = await auth.post("/auth/exchange", json={"code": code, "binding": BROWSER_SECRET})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_signing_out_ends_the_providers_session_too(sso_client, oidc_provider: Provider) -> None:
    async with sso_client() as auth, browser_for(auth) as browser:
        landed, asked = await _start_sso(browser)
        assert asked
        # Without RP-initiated logout the provider's session lives on: SSO signs straight back in.
        again, asked = await _start_sso(browser)
        assert not asked and again.path == "/session/complete"
        await _exchange(auth, landed)
        pair = await _exchange(auth, again)

        signed_out = await auth.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})

        assert signed_out.status_code == 200, signed_out.text
        end_session = httpx.URL(signed_out.json()["end_session_url"])
        assert str(end_session).startswith(f"{oidc_provider.issuer}/")
        query = parse_qs(end_session.query.decode())
        assert query["post_logout_redirect_uri"] == [f"http://{UI_HOST}/login"]
        assert query["client_id"] == [CLIENT_ID] and query["id_token_hint"][0].count(".") == 2
        # The browser goes there; the provider asks to confirm, then sends it back to the UI.
        page = await browser.get(end_session)
        form = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
        assert form and xsrf, page.text[:500]
        confirmed = await browser.post(
            urljoin(str(page.url), form.group(1)), data={"xsrf": xsrf.group(1), "logout": "yes"}
        )
        assert confirmed.is_redirect
        back = httpx.URL(urljoin(str(confirmed.url), confirmed.headers["location"]))
        assert (back.host, back.path) == (UI_HOST, "/login")
        # The provider's session is over: the next single sign-on asks for the password again.
        _, asked = await _start_sso(browser)
        assert asked
        # Sign-out is idempotent, and the end-session address is handed out once.
        assert (
            await auth.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
        ).status_code == 204


async def test_a_local_sign_out_has_nothing_to_end_at_a_provider(sso_client) -> None:
    async with sso_client() as auth:
        pair = (
            await auth.post("/auth/token", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
        ).json()
        assert (
            await auth.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
        ).status_code == 204
