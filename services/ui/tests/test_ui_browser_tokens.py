"""Signing in and the tokens page, in headless Chromium against the whole product (``aqueduct up``).

A token created in the browser must work with the official OpenAI client, and stop working once
deleted in the browser.
"""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import (
    CHROMIUM,
    People,
    dialogs_of,
    eventually,
    shoot,
    sign_in,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


def chat(proxy: str, token: str) -> str:
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key=token, max_retries=0)
    answer = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hello from the browser test"}],
        max_tokens=3,
    )
    return answer.choices[0].message.content or ""


async def test_wrong_password_is_refused_with_a_clear_message(
    stack, browser: Browser, people: People
) -> None:
    context = await browser.new_context(base_url=stack.urls["ui"])
    page = await context.new_page()
    await page.goto("/")
    await expect(page).to_have_url(f"{stack.urls['ui']}/login?next=%2F")
    await shoot(page, "login")
    await page.get_by_label("Username").fill(people.user.username)
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    await expect(page.get_by_label("Username")).to_have_value(people.user.username)
    await context.close()


async def test_a_token_created_in_the_browser_calls_a_model_until_deleted(
    stack, browser: Browser, people: People
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    await expect(page.get_by_role("heading", name="Tokens", exact=True)).to_be_visible()
    # The cap is the directory's setting (raised for the test session's stack).
    await expect(page.locator("#token-cap")).to_contain_text(re.compile(r"0 of [0-9,]+ personal tokens"))

    await page.get_by_label("Name", exact=True).fill("thesis notebook")
    await page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-secret")
    await expect(secret).to_be_visible()
    value = await secret.input_value()
    assert value.startswith("aq-")
    await expect(page.get_by_text("This is the only time the value is shown.")).to_be_visible()
    await expect(page.get_by_role("button", name="Copy")).to_be_visible()
    row = page.locator("#personal-tokens tr[data-token-id]", has_text="thesis notebook")
    await expect(row.locator("code")).to_have_text(f"{value[:7]}...{value[-4:]}")
    await expect(page.locator("#token-cap")).to_contain_text(re.compile(r"1 of [0-9,]+ personal tokens"))
    await shoot(page, "tokens")

    # Shown once: a reload shows the preview only.
    await page.reload()
    await expect(page.locator("#new-secret")).to_have_count(0)
    assert value not in await page.content()

    proxy = stack.urls["proxy"]
    assert await eventually(lambda: asyncio.to_thread(chat, proxy, value)) == "tok0 tok1 tok2"

    await row.get_by_role("button", name="Delete thesis notebook").click()
    await expect(page.get_by_role("status")).to_contain_text("Token deleted")
    assert dialogs_of(page)[-1] == "Delete “thesis notebook”? Programs using it will stop working."
    await expect(
        page.locator("#personal-tokens tr[data-token-id]", has_text="thesis notebook")
    ).to_have_count(0)

    async def refused() -> None:
        with pytest.raises(openai.AuthenticationError):
            await asyncio.to_thread(chat, proxy, value)

    await eventually(refused)
    await context.close()


async def test_regenerate_replaces_the_value(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    if not await page.get_by_label("Name", exact=True).is_visible():  # open by default only with no token yet
        await page.locator("summary", has_text="Create New Token").click()
    await page.get_by_label("Name", exact=True).fill("rotating")
    expiry = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    await page.get_by_label("Expires on").fill(expiry)
    await page.get_by_role("button", name="Create token").click()
    await expect(page.locator("#personal-tokens tr[data-token-id]", has_text="rotating")).to_contain_text(
        f"{expiry} 23:59 UTC"
    )
    first = await page.locator("#new-secret").input_value()
    await (
        page.locator("#personal-tokens tr[data-token-id]", has_text="rotating")
        .get_by_role("button", name="Regenerate rotating")
        .click()
    )
    await expect(page.get_by_role("status")).to_contain_text("the old one no longer works")
    second = await page.locator("#new-secret").input_value()
    assert second.startswith("aq-") and second != first

    proxy = stack.urls["proxy"]
    assert await eventually(lambda: asyncio.to_thread(chat, proxy, second)) == "tok0 tok1 tok2"
    with pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(chat, proxy, first)
    await context.close()


async def test_an_expired_session_is_refreshed_transparently(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    # Drop the access token as if it had expired; only the refresh cookie is left.
    cookies = [c for c in await context.cookies() if c["name"] != "aq_session"]
    await context.clear_cookies()
    await context.add_cookies(cookies)  # type: ignore[arg-type]
    await page.goto("/models")
    await expect(page.get_by_role("heading", name="Models")).to_be_visible()
    names = {c["name"] for c in await context.cookies()}
    assert "aq_session" in names  # a fresh access token was stored
    session = next(c for c in await context.cookies() if c["name"] == "aq_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    # The old refresh token is spent now (presenting it again would end the session): keep the new one.
    people.user.storage = await context.storage_state()  # type: ignore[assignment]
    await context.close()


async def test_two_tabs_refreshing_at_once_keep_the_session(stack, browser: Browser, people: People) -> None:
    context, _ = await sign_in(browser, stack.urls["ui"], people.user)
    cookies = [c for c in await context.cookies() if c["name"] != "aq_session"]
    await context.clear_cookies()
    await context.add_cookies(cookies)  # type: ignore[arg-type]
    # Both tabs present the same refresh token; the auth service lets only one of them spend it.
    tabs = [await context.new_page(), await context.new_page()]
    await asyncio.gather(*(tab.goto("/teams") for tab in tabs))
    later = await context.new_page()
    await later.goto("/models")
    await expect(later.get_by_role("heading", name="Models")).to_be_visible()
    people.user.storage = await context.storage_state()  # type: ignore[assignment]
    await context.close()


async def test_sign_out_ends_the_session(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.outsider)
    refresh = next(c for c in await context.cookies() if c["name"] == "aq_refresh")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{stack.urls['ui']}/login")
    await expect(page.get_by_role("status")).to_have_text("You are signed out.")
    await page.goto("/teams")
    assert "/login" in page.url
    # The refresh token was revoked at the auth service, so replaying the old cookie does not sign in.
    await context.add_cookies([refresh])  # type: ignore[list-item]
    await page.goto("/teams")
    assert "/login" in page.url
    people.outsider.storage = None
    await context.close()


async def test_a_failed_single_sign_on_says_why(stack, browser: Browser) -> None:
    context = await browser.new_context(base_url=stack.urls["ui"])
    page = await context.new_page()
    # The auth service hands the browser back with a one-time code; a wrong or spent one is refused there.
    await page.goto("/session/complete?code=not-a-real-code")
    await expect(page).to_have_url(re.compile(r"/session/error\?reason="))
    await expect(page.get_by_role("heading", name="Sign-in failed")).to_be_visible()
    await expect(page.get_by_role("alert")).not_to_be_empty()
    await page.goto("/session/error?reason=no_org")
    await expect(page.get_by_role("alert")).to_have_text(
        "No organisation is mapped from your groups. Ask an administrator."
    )
    await page.get_by_role("link", name="Back to sign in").click()
    await expect(page.get_by_label("Username")).to_be_visible()
    await context.close()


async def test_management_access_is_opt_in_per_token(stack, browser: Browser, people: People) -> None:
    """An Admin's token administers only when created with management access; the list says which."""
    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    values = {}
    for name, management in (("inference only", False), ("admin automation", True)):
        if not await page.get_by_label("Name", exact=True).is_visible():
            await page.locator("summary", has_text="Create New Token").click()
        await page.get_by_label("Name", exact=True).fill(name)
        if management:
            await page.get_by_label("Management access").check()
        await page.get_by_role("button", name="Create token").click()
        values[name] = await page.locator("#new-secret").input_value()
    await expect(
        page.locator("#personal-tokens tr[data-token-id]", has_text="admin automation")
    ).to_contain_text("management")
    await expect(
        page.locator("#personal-tokens tr[data-token-id]", has_text="inference only")
    ).not_to_contain_text("management")

    async with httpx.AsyncClient(base_url=stack.urls["directory"], timeout=10) as http:
        audit = {
            name: (await http.get("/api/audit/events?limit=1", headers={"Authorization": f"Bearer {value}"}))
            for name, value in values.items()
        }
    assert audit["admin automation"].status_code == 200
    assert audit["inference only"].status_code == 403
    await context.close()


async def test_a_tokens_expiry_is_changed_in_the_browser(stack, browser: Browser, people: People) -> None:
    """(Regenerating an expired token with a new expiry is a rule of the directory, tested there: the
    directory never lets a token be created already expired.)"""
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    if not await page.get_by_label("Name", exact=True).is_visible():
        await page.get_by_text("Create New Token").click()
    await page.get_by_label("Name", exact=True).fill("short-lived")
    await page.locator("#token-expiry").fill(tomorrow)
    await page.get_by_role("button", name="Create token").click()
    row = page.locator("#personal-tokens tr[data-token-id]", has_text="short-lived")
    await expect(row).to_contain_text(tomorrow)
    token_id = await row.get_attribute("data-token-id")

    # Never expires, then a date far ahead.
    await page.get_by_text("Change the expiry of “short-lived”").click()
    await (
        page.locator(f"#expiry-{token_id}").locator("..").locator("..").get_by_label("never expires").check()
    )
    await page.get_by_role("button", name="Save expiry of “short-lived”").click()
    await expect(page.get_by_role("status")).to_contain_text("never expires")
    await expect(row.locator("td").nth(2)).to_have_text("never")
    await page.get_by_text("Change the expiry of “short-lived”").click()
    await page.locator(f"#expiry-{token_id}").fill("2099-12-31")
    await page.get_by_role("button", name="Save expiry of “short-lived”").click()
    await expect(row).to_contain_text("2099-12-31")
    # A date in the past is refused with the form's own message, and changes nothing.
    await page.get_by_text("Change the expiry of “short-lived”").click()
    await page.locator(f"#expiry-{token_id}").fill("2001-01-01")
    await page.get_by_role("button", name="Save expiry of “short-lived”").click()
    await expect(page.get_by_role("alert")).to_contain_text("today or later")
    await expect(row).to_contain_text("2099-12-31")
    await context.close()
