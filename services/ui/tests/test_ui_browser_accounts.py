"""An invited user signs in for the first time with the one-time password an Admin gave them, in headless
Chromium against the whole product (``aqueduct up``)."""

from __future__ import annotations

import asyncio
import os
import re
import time

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


async def test_an_admin_adds_finds_promotes_deactivates_and_reactivates_a_user(
    stack, browser: Browser, people: People
) -> None:
    import openai
    from ui_browser_support import eventually, forced_post, shoot, sign_in

    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    await page.goto("/users")
    await page.get_by_text("Add a user").click()
    await page.get_by_label("Email").fill("pia@example.org")
    await page.get_by_label("Full name").fill("Pia Professor")
    await page.get_by_label("Username for a local account").fill("pia")
    await page.get_by_role("button", name="Add user").click()
    await expect(page.get_by_role("heading", name="User added")).to_be_visible()
    one_time = (await page.locator("#otp-value").inner_text()).strip()
    assert len(one_time) >= 12
    await page.get_by_role("link", name="Done").click()

    # Found by a part of the name; the list pages.
    await page.goto("/users")
    await page.get_by_label("Find users").fill("professor")
    await page.get_by_role("button", name="Search").click()
    rows = page.locator("#user-limits tbody tr[data-user-id]")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#users-count")).to_contain_text("1 user")
    await shoot(page, "users-search")
    await page.get_by_role("link", name="Pia Professor").click()

    # Promoted to Org-Admin, then back.
    await page.get_by_label("Org-Admin").check()
    await page.get_by_role("button", name="Save roles of Pia Professor").click()
    await expect(page.get_by_role("status").or_(page.locator(".flash"))).to_contain_text("Org-Admin")
    await page.get_by_label("Org-Admin").uncheck()
    await page.get_by_role("button", name="Save roles of Pia Professor").click()
    await expect(page.locator(".flash")).to_contain_text("Roles of Pia Professor: User.")
    user_id = page.url.rsplit("/", 1)[1]

    # Pia signs in (choosing her password), makes a token; deactivated, the proxy refuses it within a second.
    async with httpx.AsyncClient(timeout=20) as http:
        changed = await http.post(
            f"{stack.urls['auth']}/auth/password",
            json={"username": "pia", "password": one_time, "new_password": "pias-own-password"},
        )
        assert changed.status_code == 204
        pair = (
            await http.post(
                f"{stack.urls['auth']}/auth/token", json={"username": "pia", "password": "pias-own-password"}
            )
        ).json()
        issued = await http.post(
            f"{stack.urls['directory']}/api/tokens",
            json={"name": "pia-laptop"},
            headers={"Authorization": f"Bearer {pair['access_token']}"},
        )
        value = issued.json()["value"]
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value, max_retries=0)

    async def served() -> None:
        await asyncio.to_thread(
            client.chat.completions.create, model="fake-model", messages=[{"role": "user", "content": "x"}]
        )

    await eventually(served)
    await page.get_by_role("button", name="Deactivate Pia Professor").click()
    await expect(page.locator("h1")).to_contain_text("deactivated")
    started = time.monotonic()

    async def refused() -> None:
        with pytest.raises(openai.AuthenticationError):
            await served()

    await eventually(refused, within=1.0, interval=0.05)
    assert time.monotonic() - started < 1.0
    # Hidden from the list unless asked for.
    await page.goto("/users?q=pia")
    await expect(page.locator("#user-limits tbody tr[data-user-id]")).to_have_count(0)
    await page.goto("/users?q=pia&deactivated=true")
    await expect(page.locator("#user-limits tbody tr[data-user-id]")).to_have_count(1)
    await page.goto(f"/users/{user_id}")
    await page.get_by_role("button", name="Reactivate Pia Professor").click()
    await eventually(served)

    # A password reset gives a new one-time password; the old password stops working.
    await page.get_by_role("button", name="Reset password").click()
    await expect(page.get_by_role("heading", name="New one-time password")).to_be_visible()
    async with httpx.AsyncClient(timeout=20) as http:
        old = await http.post(
            f"{stack.urls['auth']}/auth/token", json={"username": "pia", "password": "pias-own-password"}
        )
        assert old.status_code == 401
    await context.close()

    # An Org-Admin cannot grant Admin, even with a forged form.
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    await page.goto(f"/users/{user_id}")
    await expect(page.get_by_label("Admin: manages everything")).to_have_count(0)
    await forced_post(page, f"/users/{user_id}/roles", {"org_admin": "on", "admin": "on"})
    async with httpx.AsyncClient(timeout=20) as http:
        pair = (
            await http.post(
                f"{stack.urls['auth']}/auth/token",
                json={"username": stack.admin_username, "password": stack.admin_password},
            )
        ).json()
        user = (
            await http.get(
                f"{stack.urls['directory']}/api/users/{user_id}",
                headers={"Authorization": f"Bearer {pair['access_token']}"},
            )
        ).json()
    assert user["admin"] is False
    await context.close()


async def test_a_team_admin_finds_users_to_add_and_demotes_a_team_admin(
    stack, browser: Browser, people: People
) -> None:
    from ui_browser_support import sign_in

    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    await page.goto(f"/teams/{people.team_id}")
    # A teammate is shown by name, never by an id.
    await expect(page.locator("#members")).to_contain_text(people.user.name)
    await expect(page.locator("#members")).not_to_contain_text(re.compile(r"member [0-9a-f]{8}"))
    await page.get_by_label("Find users").fill(people.outsider.email)
    await page.get_by_role("button", name="Find", exact=True).click()
    picker = page.get_by_label("Users of the organisation")
    await expect(picker.locator("option")).to_have_count(1)
    await picker.select_option(value=people.outsider.user_id)
    await page.get_by_label("as Team-Admin").check()
    await page.get_by_role("button", name="Add to team").click()
    row = page.locator("#members tr", has_text=people.outsider.name)
    await expect(row.locator(".tag")).to_have_text("Team-Admin")
    await row.get_by_role("button", name=f"Demote {people.outsider.name} to member").click()
    await expect(page.locator("#members tr", has_text=people.outsider.name).locator(".tag")).to_have_text(
        "User"
    )
    await (
        page.locator("#members tr", has_text=people.outsider.name)
        .get_by_role("button", name=f"Remove {people.outsider.name}")
        .click()
    )
    await expect(page.locator("#members")).not_to_contain_text(people.outsider.name)
    await context.close()
