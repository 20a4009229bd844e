"""An invited user signs in for the first time with the one-time password an Admin gave them, in headless
Chromium against the whole product (``aqueduct up``)."""

from __future__ import annotations

import os

import httpx
import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import CHROMIUM, People

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


async def test_a_one_time_password_is_replaced_at_first_sign_in(
    stack, browser: Browser, people: People
) -> None:
    urls = stack.urls
    async with httpx.AsyncClient(timeout=20) as http:
        pair = (
            await http.post(
                f"{urls['auth']}/auth/token",
                json={"username": stack.admin_username, "password": stack.admin_password},
            )
        ).json()
        admin = {"Authorization": f"Bearer {pair['access_token']}"}
        created = await http.post(
            f"{urls['directory']}/api/users",
            json={"email": "ines@example.org", "name": "Ines Invited", "org_id": people.org_id},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        invited = await http.post(
            f"{urls['auth']}/auth/local-users",
            json={"username": "ines", "email": "ines@example.org", "name": "Ines Invited"},
            headers=admin,
        )
        one_time = invited.json()["one_time_password"]

    context = await browser.new_context(base_url=urls["ui"])
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_label("Username").fill("ines")
    await page.get_by_label("Password").fill(one_time)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()

    # Mistyped confirmation: refused, nothing changed, still on the form.
    await page.get_by_label("New password", exact=True).fill("ines-own-password")
    await page.get_by_label("New password, again").fill("ines-own-passwurd")
    await page.get_by_role("button", name="Set password and sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("The two new passwords differ.")
    # Too short: the server's own message, as a sentence.
    await page.get_by_label("New password", exact=True).fill("short")
    await page.get_by_label("New password, again").fill("short")
    await page.evaluate(
        "document.querySelectorAll('input[minlength]').forEach(i => i.removeAttribute('minlength'))"
    )
    await page.get_by_role("button", name="Set password and sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("at least 8 characters")

    await page.get_by_label("New password", exact=True).fill("ines-own-password")
    await page.get_by_label("New password, again").fill("ines-own-password")
    await page.get_by_role("button", name="Set password and sign in").click()
    await expect(page).to_have_url(f"{urls['ui']}/")
    await expect(page.get_by_text("Ines Invited").first).to_be_visible()
    await context.close()

    # The one-time password is spent; the chosen one signs in directly.
    context = await browser.new_context(base_url=urls["ui"])
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_label("Username").fill("ines")
    await page.get_by_label("Password").fill(one_time)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    await page.get_by_label("Password").fill("ines-own-password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{urls['ui']}/")
    await context.close()
