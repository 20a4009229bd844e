"""Fixtures of the fuzzing suite: a product of its own (``aqueduct up``) and an Admin's credentials on it.

The fuzzer creates, changes and deletes whatever the APIs let an Admin touch, so it gets its own stack and
never shares the session's ``stack`` with the end-to-end tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.stack import Stack, write_config


@dataclass(frozen=True)
class AdminCredentials:
    session: str  # a session (access) token from the auth service
    management_token: str  # an API token with management access (directory, accounting)
    api_token: str  # an inference API token (proxy)
    ui_cookies: dict[str, str]  # a signed-in browser's cookies on the UI
    ui_csrf: str  # the CSRF token that goes with them

    def bearer(self, credential: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential}"}


@pytest.fixture(scope="session")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("fuzz-stack")
    running = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url)).start()
    yield running
    running.stop()


def _sign_in_ui(ui: str, username: str, password: str) -> tuple[dict[str, str], str]:
    with httpx.Client(base_url=ui, timeout=20) as browser:
        form = browser.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf, form.text
        signed_in = browser.post(
            "/login", data={"username": username, "password": password, "csrf_token": csrf.group(1)}
        )
        assert signed_in.status_code in (302, 303), signed_in.text
        # The cookies and the X-CSRF-Token header the fuzzer sends reach the handlers: a token is created.
        made = browser.post(
            "/tokens", data={"name": "fuzz-ui-check"}, headers={"X-CSRF-Token": csrf.group(1)}
        )
        assert made.status_code == 303
        assert "fuzz-ui-check" in browser.get(made.headers["location"]).text
        return dict(browser.cookies), csrf.group(1)


@pytest.fixture(scope="session")
def admin(fuzz_stack: Stack) -> AdminCredentials:
    urls = fuzz_stack.urls
    pair = httpx.post(
        f"{urls['auth']}/auth/token",
        json={"username": fuzz_stack.admin_username, "password": fuzz_stack.admin_password},
        timeout=20,
    )
    pair.raise_for_status()
    session = pair.json()["access_token"]
    headers = {"Authorization": f"Bearer {session}"}
    tokens = {}
    for name, management in (("fuzz-management", True), ("fuzz-inference", False)):
        issued = httpx.post(
            f"{urls['directory']}/api/tokens",
            json={"name": name, "management": management},
            headers=headers,
            timeout=20,
        )
        issued.raise_for_status()
        tokens[name] = issued.json()["value"]
    cookies, csrf = _sign_in_ui(urls["ui"], fuzz_stack.admin_username, fuzz_stack.admin_password)
    return AdminCredentials(session, tokens["fuzz-management"], tokens["fuzz-inference"], cookies, csrf)
