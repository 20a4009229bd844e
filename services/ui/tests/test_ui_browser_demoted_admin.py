"""A demoted Admin in headless Chromium, against the whole product: the UI reads roles from the directory at
each page load, and refuses every Admin action it carries to auth or accounting itself, within the moment
it keeps roles (2 s): a forced POST re-drives no dead letter and resets no password. (Auth and accounting
check the current roles too, from the directory's snapshot: tests/e2e/test_sign_out_everywhere.py.)"""

from __future__ import annotations

import os

import httpx
import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import (
    CHROMIUM,
    People,
    Person,
    create_person,
    eventually,
    forced_post,
    sign_in,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


async def _person(
    http: httpx.AsyncClient, stack, headers: dict[str, str], people: People, handle: str, **roles
) -> Person:
    tag = os.urandom(3).hex()
    return await create_person(
        http, stack.urls, headers, people.org_id, f"{handle}-{tag}", handle.title(), **roles
    )


async def test_a_demoted_admin_can_no_longer_redrive_or_reset_passwords_through_the_ui(
    stack, browser: Browser, people: People
) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        pair = await http.post(
            f"{stack.urls['auth']}/auth/token",
            json={"username": stack.admin_username, "password": stack.admin_password},
        )
        headers = {"Authorization": f"Bearer {pair.json()['access_token']}"}
        dana = await _person(http, stack, headers, people, "dana", admin=True, org_admin=True)
        victim = await _person(http, stack, headers, people, "vic")

        context, page = await sign_in(browser, stack.urls["ui"], dana)
        try:
            await page.goto("/admin/dead-letters")
            await expect(page.get_by_role("heading", name="Dead letters", exact=True)).to_be_visible()

            # Admin taken away through the API (not this UI); Dana stays Org-Admin of the org.
            demoted = await http.patch(
                f"{stack.urls['directory']}/api/users/{dana.user_id}", json={"admin": False}, headers=headers
            )
            demoted.raise_for_status()

            async def admin_pages_gone() -> None:
                await page.goto("/admin/dead-letters")
                await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible(timeout=500)

            await eventually(admin_pages_gone, within=10)

            await page.goto(f"/users/{victim.user_id}")
            await forced_post(page, "/admin/dead-letters/redrive", {})
            await expect(page.get_by_role("alert")).to_contain_text("for Admins")
            await expect(page.get_by_text("re-driven")).to_have_count(0)

            await page.goto(f"/users/{victim.user_id}")
            await forced_post(page, "/admin/dead-letters/1/redrive", {})
            await expect(page.get_by_role("alert")).to_contain_text("for Admins")

            await page.goto(f"/users/{victim.user_id}")
            await forced_post(page, f"/users/{victim.user_id}/reset-password", {})
            await expect(page.get_by_role("alert")).to_contain_text("Only an Admin")
        finally:
            await context.close()

        # The victim's password still works: nothing was reset.
        signed_in = await http.post(
            f"{stack.urls['auth']}/auth/token",
            json={"username": victim.username, "password": victim.password},
        )
        assert signed_in.status_code == 200, signed_in.text
        assert not signed_in.json().get("must_change_password"), signed_in.json()
