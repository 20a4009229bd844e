"""Single sign-on in Chromium, with a real OpenID provider (``oidc-provider`` under Node, from the auth
service's tests), and the terms of service a user must accept before their tokens work.

Runs its own ``aqueduct up`` with OIDC configured, so that publishing terms of service does not change
the shared stack that the other tests use.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import openai
import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import CHROMIUM, eventually, shoot

from aqueduct_cli.embedded import free_port, wait_for_port
from tests.support.stack import Stack, write_config

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]

PROVIDER_DIR = Path(__file__).resolve().parents[2] / "auth" / "tests" / "oidc"
CLIENT_ID = "aqueduct"
CLIENT_SECRET = "test-client-secret-for-the-oidc-provider"


@pytest.fixture(scope="module")
def sso_stack(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("needs Node.js and oidc-provider (services/auth/tests/oidc/install.sh)")
    workdir = tmp_path_factory.mktemp("sso-stack")
    config = write_config(
        workdir / "aqueduct.yaml", upstream.url, extra="  - name: staff\n    sso_group: staff\n"
    )
    provider_port = free_port()
    stack = Stack(
        workdir,
        config,
        env={
            "AQUEDUCT_AUTH_OIDC_ISSUER": f"http://127.0.0.1:{provider_port}",
            "AQUEDUCT_AUTH_OIDC_CLIENT_ID": CLIENT_ID,
            "AQUEDUCT_AUTH_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "AQUEDUCT_AUTH_OIDC_ADMIN_GROUP": "admins",
        },
    )
    auth_port = stack.env["AQUEDUCT_AUTH_PORT"]
    log = open(workdir / "provider.log", "wb")
    provider = subprocess.Popen(
        [node, str(PROVIDER_DIR / "provider.mjs")],
        cwd=PROVIDER_DIR,
        env={
            **os.environ,
            "PORT": str(provider_port),
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": CLIENT_SECRET,
            "REDIRECT_URI": f"http://127.0.0.1:{auth_port}/auth/oidc/callback",
            "POST_LOGOUT_REDIRECT_URI": f"http://127.0.0.1:{stack.env['AQUEDUCT_UI_PORT']}/login",
        },
        stdout=log,
        stderr=log,
    )
    try:
        wait_for_port("127.0.0.1", provider_port, process=provider)
        stack.start()
        yield stack
    finally:
        stack.stop()
        provider.terminate()
        provider.wait(10)
        log.close()


async def sso_sign_in(browser: Browser, stack: Stack, login: str, password: str):
    context = await browser.new_context(base_url=stack.urls["ui"], viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await page.goto("/")
    await page.get_by_role("link", name="Sign in with SSO").click()
    await expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    await page.get_by_label("Username").fill(login)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    return context, page


async def test_single_sign_on_lands_on_the_tokens_page(browser: Browser, sso_stack: Stack) -> None:
    context, page = await sso_sign_in(browser, sso_stack, "alice", "alice-password")
    await expect(page.get_by_role("heading", name="Tokens", exact=True)).to_be_visible()
    assert page.url == f"{sso_stack.urls['ui']}/"
    await expect(page.locator(".who-name")).to_have_text("Alice Staff")
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["aq_session"]["httpOnly"] and cookies["aq_refresh"]["httpOnly"]
    await page.goto("/teams")
    await expect(page.get_by_role("heading", name="Teams of staff")).to_be_visible()
    await context.close()


async def test_a_user_without_a_mapped_group_is_told_why(browser: Browser, sso_stack: Stack) -> None:
    context, page = await sso_sign_in(browser, sso_stack, "nobody", "nobody-password")
    await expect(page.get_by_role("heading", name="Sign-in failed")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("org")
    await shoot(page, "sso-error")
    await context.close()


async def attacker_hand_off(ui: str, login: str, password: str) -> tuple[httpx.AsyncClient, str]:
    """The attacker's own browser (httpx with a cookie jar): SSO from the UI's sign-in link, stopping at
    the hand-off link the auth service sends back to the UI."""
    client = httpx.AsyncClient(timeout=15)
    response = await client.get(f"{ui}/login/sso?next=/")
    for _ in range(20):
        if response.is_redirect:
            target = urljoin(str(response.url), response.headers["location"])
            if target.startswith(f"{ui}/session/complete"):
                return client, target
            response = await client.get(target)
            continue
        action = re.search(r'<form method="post" action="([^"]+)"', response.text)
        assert action, f"no sign-in form at {response.url}"
        response = await client.post(
            urljoin(str(response.url), action.group(1)), data={"login": login, "password": password}
        )
    raise AssertionError("too many redirects")


async def test_a_hand_off_link_from_another_browser_signs_nobody_in(
    browser: Browser, sso_stack: Stack
) -> None:
    """Login CSRF: the attacker signs in as themselves but stops at the hand-off link and sends it to the
    victim. Opened in the victim's browser, it signs nobody in; the attacker's own browser still can."""
    ui = sso_stack.urls["ui"]
    attacker, hand_off = await attacker_hand_off(ui, "alice", "alice-password")
    assert "code=" in hand_off

    victim = await browser.new_context(base_url=ui)
    page = await victim.new_page()
    await page.goto(hand_off)
    await expect(page.get_by_role("heading", name="Sign-in failed")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("not started in this browser")
    assert not [c for c in await victim.cookies() if c["name"] in ("aq_session", "aq_refresh")]
    await victim.close()

    try:  # the browser that started the sign-in finishes it with the same link
        finished = await attacker.get(hand_off)
    finally:
        await attacker.aclose()
    assert finished.status_code == 303 and finished.headers["location"] == "/"
    assert "aq_session" in finished.cookies


def chat(proxy: str, token: str) -> str:
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key=token, max_retries=0)
    answer = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hello"}], max_tokens=2
    )
    return answer.choices[0].message.content or ""


async def test_tokens_work_once_the_terms_of_service_are_accepted(browser: Browser, sso_stack: Stack) -> None:
    urls = sso_stack.urls
    async with httpx.AsyncClient(timeout=20) as http:
        pair = (
            await http.post(
                f"{urls['auth']}/auth/token",
                json={"username": sso_stack.admin_username, "password": sso_stack.admin_password},
            )
        ).json()
        published = await http.post(
            f"{urls['directory']}/api/terms",
            json={"version": "2026-11", "url": "https://example.org/terms"},
            headers={"Authorization": f"Bearer {pair['access_token']}"},
        )
        published.raise_for_status()

    context, page = await sso_sign_in(browser, sso_stack, "alice", "alice-password")
    banner = page.locator("#terms-banner")
    await expect(banner).to_contain_text("Terms of service 2026-11")
    await page.get_by_label("Name", exact=True).fill("after terms")
    await page.get_by_role("button", name="Create token").click()
    value = await page.locator("#new-secret").input_value()

    async def refused_for_terms() -> None:
        with pytest.raises(openai.PermissionDeniedError):
            await asyncio.to_thread(chat, urls["proxy"], value)

    await eventually(refused_for_terms)
    await page.get_by_role("button", name="I accept the terms of service").click()
    await expect(page.get_by_role("status")).to_contain_text("terms of service 2026-11 accepted")
    await expect(page.locator("#terms-banner")).to_have_count(0)
    assert await eventually(lambda: asyncio.to_thread(chat, urls["proxy"], value)) == "tok0 tok1"
    await context.close()


async def test_signing_out_ends_the_identity_providers_session(browser: Browser, sso_stack: Stack) -> None:
    """Else "Sign in with SSO" after signing out would sign the user straight back in, unasked."""
    context, page = await sso_sign_in(browser, sso_stack, "alice", "alice-password")
    await expect(page.locator(".who-name")).to_have_text("Alice Staff")

    await page.get_by_role("button", name="Sign out").click()
    # The provider asks to confirm (oidc-provider's own page), then sends the browser back to /login.
    await page.get_by_role("button", name="Yes, sign me out").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    await expect(page.get_by_role("status")).to_contain_text("You are signed out")
    assert not [c for c in await context.cookies() if c["name"] in ("aq_session", "aq_refresh")]

    await page.get_by_role("link", name="Sign in with SSO").click()
    await expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    await context.close()


async def test_roles_from_the_providers_groups_are_re_evaluated_at_each_sign_in(
    browser: Browser, sso_stack: Stack
) -> None:
    issuer = sso_stack.env["AQUEDUCT_AUTH_OIDC_ISSUER"]
    urls = sso_stack.urls

    async def groups_at_the_provider(login: str, groups: str) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            (await http.post(f"{issuer}/test/groups/{login}", content=groups)).raise_for_status()

    async def role_after_sign_in(login: str, password: str) -> str:
        context, page = await sso_sign_in(browser, sso_stack, login, password)
        await expect(page.locator(".who-name")).to_be_visible()
        role = await page.locator(".who .tag").inner_text()
        await context.close()
        return role

    try:
        assert await role_after_sign_in("root", "root-password") == "Admin"
        await groups_at_the_provider("root", "staff")  # root leaves the admin group
        assert await role_after_sign_in("root", "root-password") == "User"
        await groups_at_the_provider("root", "admins,staff")  # and joins it again
        assert await role_after_sign_in("root", "root-password") == "Admin"
    finally:
        await groups_at_the_provider("root", "admins,staff")

    # An Admin's grant in the product is not the provider's to take back.
    assert await role_after_sign_in("alice", "alice-password") == "User"
    async with httpx.AsyncClient(timeout=20) as http:
        pair = (
            await http.post(
                f"{urls['auth']}/auth/token",
                json={"username": sso_stack.admin_username, "password": sso_stack.admin_password},
            )
        ).json()
        admin = {"Authorization": f"Bearer {pair['access_token']}"}
        users = (await http.get(f"{urls['directory']}/api/users", headers=admin)).json()
        alice = next(u for u in users if u["email"] == "alice@example.org")
        root = next(u for u in users if u["email"] == "root@example.org")
        assert root["admin"] and root["admin_from_sign_in"]  # the user's page says where Admin comes from
        granted = await http.patch(
            f"{urls['directory']}/api/users/{alice['id']}", json={"admin": True}, headers=admin
        )
        granted.raise_for_status()
        try:
            assert await role_after_sign_in("alice", "alice-password") == "Admin"
        finally:
            revoked = await http.patch(
                f"{urls['directory']}/api/users/{alice['id']}", json={"admin": False}, headers=admin
            )
            revoked.raise_for_status()
    assert await role_after_sign_in("alice", "alice-password") == "User"


async def test_the_error_page_shows_only_the_products_own_words(browser: Browser, sso_stack: Stack) -> None:
    context = await browser.new_context(base_url=sso_stack.urls["ui"])
    page = await context.new_page()
    await page.goto("/session/error?message=Your+account+is+locked.+Call+%2B1-555-0100&reason=no_org")
    await expect(page.get_by_role("alert")).to_have_text(
        "No organisation is mapped from your groups. Ask an administrator."
    )
    assert "555-0100" not in await page.content()
    await context.close()
