"""What the server refuses, the page says next to the field, and what the user typed stays in the form.

The browser's own checks (``type="url"``, ``pattern``) let these values through; the directory refuses
them (a ``javascript:`` URL, a limit of 0, a 26-digit limit) with a 422 naming the field, and nothing
changes.
"""

from __future__ import annotations

import os

import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import CHROMIUM, People, shoot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


async def test_a_refused_endpoint_keeps_what_the_admin_typed_with_the_reason_at_the_url(
    stack, browser: Browser, people: People
) -> None:
    slug = f"new-{os.urandom(3).hex()}"
    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    try:
        await page.goto("/admin#endpoints")
        add = page.locator("details:has(form[action='/admin/endpoints'])")
        await add.locator("summary").click()
        await add.get_by_label("Slug").fill(slug)
        await add.get_by_label("URL").fill("javascript:alert(1)")
        await add.get_by_label("API key environment variable").fill("VLLM_KEY")
        await add.get_by_role("button", name="Add endpoint").click()

        await expect(page.get_by_role("alert")).to_contain_text("http:// or https:// URL")
        add = page.locator("details:has(form[action='/admin/endpoints'])")
        await expect(add).to_have_attribute("open", "")
        url = add.get_by_label("URL")
        await expect(url).to_have_value("javascript:alert(1)")
        await expect(url).to_have_attribute("aria-invalid", "true")
        await expect(url).to_be_focused()
        # The server's message sits right after the field it names.
        message = url.locator("xpath=following-sibling::p[@class='field-error']")
        await expect(message).to_contain_text("the endpoint URL must be an http:// or https:// URL")
        await expect(add.get_by_label("Slug")).to_have_value(slug)
        await expect(add.get_by_label("API key environment variable")).to_have_value("VLLM_KEY")
        await shoot(page, "admin-endpoint-refused")
        await expect(page.locator("#admin-endpoints")).not_to_contain_text(slug)  # nothing was created

        # Corrected in place, it is accepted.
        await url.fill("http://vllm.internal:8000/v1")
        await add.get_by_role("button", name="Add endpoint").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Endpoint “{slug}” added.")
        await expect(page.locator(".field-error")).to_have_count(0)
        await page.get_by_role("button", name=f"Remove endpoint {slug}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Endpoint “{slug}” removed.")
    finally:
        await context.close()


@pytest.mark.parametrize(
    ("typed", "reason"),
    [("0", "must be at least 1"), ("100000000000000000000000000", "must be at most 1,000,000,000,000")],
)
async def test_a_refused_limit_keeps_what_the_org_admin_typed_with_the_reason_at_the_field(
    stack, browser: Browser, people: People, typed: str, reason: str
) -> None:
    otto = people.outsider
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    try:
        await page.goto("/users")
        shown = page.locator(f"#user-limits tr[data-user-id='{otto.user_id}']")
        before = await shown.inner_text()
        edit = page.locator("details", has_text=f"Edit limits of {otto.name}")
        await edit.locator("summary").click()
        await edit.get_by_label("Requests per minute").fill(typed)
        await edit.get_by_label("Output tokens per minute").fill("12,000")
        await edit.get_by_role("button", name=f"Save limits of {otto.name}").click()

        await expect(page.get_by_role("alert")).to_contain_text(reason)
        edit = page.locator("details", has_text=f"Edit limits of {otto.name}")
        await expect(edit).to_have_attribute("open", "")
        rpm = edit.get_by_label("Requests per minute")
        await expect(rpm).to_have_value(typed)
        await expect(rpm).to_have_attribute("aria-invalid", "true")
        await expect(rpm.locator("xpath=following-sibling::p[@class='field-error']")).to_contain_text(reason)
        await expect(edit.get_by_label("Output tokens per minute")).to_have_value("12,000")
        await shoot(page, "user-limits-refused")
        await expect(shown).to_have_text(before)  # nothing was changed
    finally:
        await context.close()
