"""Helpers of the UI's browser tests: people in each role, signed-in browser pages, screenshots."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from playwright.async_api import Browser, BrowserContext, Page

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "SCREENSHOTS",
    "People",
    "Person",
    "dialogs_of",
    "eventually",
    "forced_post",
    "provision_people",
    "shoot",
    "sign_in",
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# `make screenshots` points this at docs/screenshots; ordinary test runs leave the repository untouched.
SCREENSHOTS = Path(
    os.environ.get("AQUEDUCT_SCREENSHOTS_DIR", Path(tempfile.gettempdir()) / "aqueduct-screenshots")
)
PASSWORD = "correct-horse-battery-staple"

T = TypeVar("T")
_DIALOGS: dict[int, list[str]] = {}


@dataclass
class Person:
    username: str
    password: str
    name: str
    email: str
    user_id: str = ""
    storage: dict[str, Any] | None = None  # the browser's cookies once signed in (one sign-in per person)


@dataclass
class People:
    admin: Person
    org_admin: Person
    team_admin: Person
    user: Person
    outsider: Person  # in the org, not in the team
    org_id: str
    team_id: str  # the "research" team of the test configuration


async def eventually(probe: Callable[[], Awaitable[T]], within: float = 10.0, interval: float = 0.2) -> T:
    """Retry ``probe`` until it stops raising: projections (KV snapshot, usage) are asynchronous."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await probe()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(interval)


async def create_person(
    http: httpx.AsyncClient,
    urls: dict[str, str],
    headers: dict[str, str],
    org_id: str,
    username: str,
    name: str,
    **roles: Any,
) -> Person:
    """A user of ``org_id`` in the directory (with ``roles``, e.g. ``org_admin=True``) and a local account
    to sign in with, created by the caller behind ``headers``."""
    p = Person(username, PASSWORD, name, f"{username}@example.org")
    created = await http.post(
        f"{urls['directory']}/api/users",
        json={"email": p.email, "name": p.name, "org_id": org_id, **roles},
        headers=headers,
    )
    created.raise_for_status()
    p.user_id = created.json()["id"]
    account = await http.post(
        f"{urls['auth']}/auth/local-users",
        json={"username": p.username, "password": p.password, "email": p.email, "name": p.name},
        headers=headers,
    )
    account.raise_for_status()
    return p


async def provision_people(urls: dict[str, str], admin_username: str, admin_password: str) -> People:
    """Users of each role, created through the public APIs as an Admin would (directory + local accounts)."""
    tag = os.urandom(3).hex()
    async with httpx.AsyncClient(timeout=20) as http:
        pair = (
            await http.post(
                f"{urls['auth']}/auth/token", json={"username": admin_username, "password": admin_password}
            )
        ).json()
        admin_headers = {"Authorization": f"Bearer {pair['access_token']}"}
        me = (await http.get(f"{urls['directory']}/api/me", headers=admin_headers)).json()
        org_id = me["org_id"]
        teams = (
            await http.get(f"{urls['directory']}/api/teams", params={"org_id": org_id}, headers=admin_headers)
        ).json()
        team_id = next(t["id"] for t in teams if t["name"] == "research")

        async def person(handle: str, name: str, org_admin: bool = False) -> Person:
            return await create_person(
                http, urls, admin_headers, org_id, f"{handle}-{tag}", name, org_admin=org_admin
            )

        org_admin = await person("olga", "Olga Org-Admin", org_admin=True)
        team_admin = await person("tom", "Tom Team-Admin")
        user = await person("uma", "Uma User")
        outsider = await person("otto", "Otto Outsider")
        for member, is_admin in ((team_admin, True), (user, False)):
            added = await http.post(
                f"{urls['directory']}/api/teams/{team_id}/members",
                json={"user_id": member.user_id, "team_admin": is_admin},
                headers=admin_headers,
            )
            added.raise_for_status()
    admin = Person(admin_username, admin_password, "admin", "", me["id"])
    return People(admin, org_admin, team_admin, user, outsider, org_id, team_id)


async def sign_in(
    browser: Browser, ui: str, person: Person, width: int = 1280
) -> tuple[BrowserContext, Page]:
    """A signed-in page; the first time through the login form, later from the saved cookies."""
    context = await browser.new_context(
        base_url=ui,
        viewport={"width": width, "height": 900},
        storage_state=person.storage,  # type: ignore[arg-type]
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    seen = _DIALOGS.setdefault(id(page), [])

    async def confirm(dialog: Any) -> None:
        seen.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    await page.goto("/")
    if "/login" in page.url:
        await page.get_by_label("Username").fill(person.username)
        await page.get_by_label("Password").fill(person.password)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{ui}/")
        person.storage = await context.storage_state()  # type: ignore[assignment]
    return context, page


async def forced_post(page: Page, action: str, fields: dict[str, str]) -> None:
    """Submit a form the page does not offer, with the page's own CSRF token, as a crafty user would."""
    await page.evaluate(
        """([action, fields]) => {
            const form = document.createElement("form");
            form.method = "post"; form.action = action;
            const token = document.querySelector("input[name=csrf_token]").value;
            for (const [name, value] of Object.entries({...fields, csrf_token: token})) {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = name; input.value = value; form.appendChild(input);
            }
            document.body.appendChild(form); form.submit();
        }""",
        [action, fields],
    )
    await page.wait_for_load_state()


def dialogs_of(page: Page) -> list[str]:
    """The confirmation dialogs the page has shown (and that were accepted), oldest first."""
    return _DIALOGS.get(id(page), [])


async def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, tiny)
    with contextlib.suppress(Exception):  # a screenshot is documentation, never the reason a test fails
        # Even a throwaway test token's value stays out of the repository: it is masked.
        await page.screenshot(
            path=str(SCREENSHOTS / f"{name}.png"), full_page=True, mask=[page.locator("[data-secret]")]
        )
