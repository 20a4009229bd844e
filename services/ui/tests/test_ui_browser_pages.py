"""Models, usage, Admin and Audit pages in headless Chromium, against the whole product.

The usage of a token created in the browser appears on the usage page after calls with the official
OpenAI client; the Admin pages change the catalogue and the audit view shows who did it.
"""

from __future__ import annotations

import asyncio
import os
import re

import openai
import pytest
from playwright.async_api import Browser, Page, expect
from ui_browser_support import CHROMIUM, People, eventually, shoot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


def chat(proxy: str, token: str, words: int) -> None:
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key=token, max_retries=0)
    client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "word " * words}], max_tokens=5
    )


async def test_models_page_shows_endpoints_urls_and_a_snippet(
    stack, browser: Browser, people: People
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.outsider)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    proxy = stack.urls["proxy"]
    await expect(page.locator("#base-url")).to_have_value(f"{proxy}/v1")
    await expect(page.get_by_text(f"{proxy}/fake/v1")).to_be_visible()
    row = page.locator("tr[data-model='fake-model']")
    await expect(row).to_contain_text("available to you")
    snippet = await page.locator("#sdk-snippet").inner_text()
    assert f'base_url="{proxy}/v1"' in snippet
    # The snippet runs as it is: it names a chat model this user may call (other tests of the session
    # add models, so which one is not fixed).
    named = re.search(r'model="([^"]+)"', snippet)
    assert named, snippet
    await expect(page.locator(f"tr[data-model='{named.group(1)}']")).to_contain_text("available to you")
    assert "embed" not in named.group(1)
    await shoot(page, "models")
    await context.close()


async def wait_for_requests(page: Page, at_least: int) -> None:
    async def counted() -> None:
        await page.reload()
        text = await page.locator("#usage-totals dd").first.inner_text()
        assert int(text.replace(",", "")) >= at_least, text

    await eventually(counted, within=30, interval=1.0)


async def test_usage_of_a_browser_token_appears_on_the_usage_page(
    stack, browser: Browser, people: People
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    await page.get_by_label("Name", exact=True).fill("usage probe")
    await page.get_by_role("button", name="Create token").click()
    value = await page.locator("#new-secret").input_value()
    proxy = stack.urls["proxy"]
    await eventually(lambda: asyncio.to_thread(chat, proxy, value, 3))
    await asyncio.to_thread(chat, proxy, value, 7)

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Usage").click()
    await page.get_by_label("Time range", exact=True).select_option("1h")
    await page.get_by_role("button", name="Show").click()
    await wait_for_requests(page, 2)
    table = page.locator("#usage-groups")
    await expect(table.locator("tr", has_text="fake-model")).to_be_visible()
    await expect(page.locator("svg.chart polyline").first).to_be_attached()
    await expect(page.locator("svg.chart title", has_text="Requests per minute")).to_be_attached()
    options = await page.get_by_label("Group by").locator("option").all_inner_texts()
    assert options == ["Model", "Team", "User", "Token"]  # an Org-Admin's view of the org
    await shoot(page, "usage")

    await page.get_by_label("Group by").select_option("token")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#usage-groups")).to_contain_text("usage probe")

    href = await page.get_by_role("link", name="Export CSV").get_attribute("href")
    assert href
    csv = await page.request.get(href)
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    lines = (await csv.text()).strip().splitlines()
    assert lines[0].startswith("token,token_name,requests") and len(lines) >= 2
    assert any(",usage probe," in line for line in lines[1:])  # named next to its id
    await context.close()


async def test_a_plain_user_sees_only_their_own_usage(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.outsider)
    await page.goto("/usage?range=24h&group_by=user")
    await expect(page.get_by_text("Your own usage.")).to_be_visible()
    options = await page.get_by_label("Group by").locator("option").all_inner_texts()
    assert options == ["Model", "Token"]
    await expect(page.get_by_label("Group by")).to_have_value("model")  # "user" is not theirs to ask
    await context.close()


async def test_admin_changes_the_catalogue_and_the_audit_shows_it(
    stack, browser: Browser, people: People
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    tag = os.urandom(2).hex()

    await page.locator("summary", has_text="Add endpoint").click()
    await page.get_by_label("Slug").fill(f"vllm-{tag}")
    await page.get_by_label("URL", exact=True).first.fill("http://127.0.0.1:9/v1")
    await page.get_by_role("button", name="Add endpoint").click()
    await expect(page.locator("#admin-endpoints")).to_contain_text(f"vllm-{tag}")

    await page.locator("summary", has_text="Add model").click()
    await page.locator("#m-name").fill(f"llama-{tag}")
    await page.locator("#m-endpoint").select_option(f"vllm-{tag}")
    await page.locator("#m-in").fill("0.5")
    await page.locator("#m-out").fill("1.5")
    await page.get_by_role("button", name="Add model").click()
    await expect(page.locator("#admin-models")).to_contain_text(f"llama-{tag}")

    # A new org with its own limits, budget and an excluded model.
    await page.locator("summary", has_text="Add organisation").click()
    await page.locator("#new-org-name").fill(f"lab-{tag}")
    await page.get_by_role("button", name="Create organisation").click()
    org = page.locator("details.org", has_text=f"lab-{tag}")
    await org.locator("summary").click()
    await org.get_by_label("Requests per minute", exact=True).fill("120")
    await org.get_by_label("Monthly budget (USD)").fill("250")
    await org.get_by_label("Excluded models").select_option(f"llama-{tag}")
    await org.get_by_label("Output tokens per minute of fake-model").fill("9,000")
    await org.get_by_role("button", name=f"Save lab-{tag}").click()
    await expect(page.get_by_role("status")).to_contain_text("Organisation saved")
    org = page.locator("details.org", has_text=f"lab-{tag}")
    await expect(org.locator("summary")).to_contain_text("1 excluded")
    await org.locator("summary").click()
    await expect(org.get_by_label("Requests per minute", exact=True)).to_have_value("120")
    await expect(org.get_by_label("Monthly budget (USD)")).to_have_value(re.compile(r"^250"))
    await expect(org.get_by_label("Output tokens per minute of fake-model")).to_have_value("9000")
    # A user added by email (they sign in later and are linked by it), and an MCP server for one team.
    await page.locator("summary", has_text="Add user").click()
    await page.get_by_label("Email").fill(f"new-{tag}@example.org")
    await page.locator("#new-user-name").fill(f"New Hire {tag}")
    await page.locator("#new-user-org").select_option(label="default")  # other tests add orgs
    await page.get_by_role("button", name="Add user").click()
    await expect(page.locator("#admin-users tr", has_text=f"New Hire {tag}")).to_contain_text("default")
    await page.locator("#mcp-name").fill(f"wiki-{tag}")
    await page.locator("#mcp-url").fill("http://127.0.0.1:9/mcp")
    await page.get_by_label("Allowed teams").select_option(people.team_id)
    await page.get_by_role("button", name="Register").click()
    await expect(page.locator("#mcp")).to_contain_text(f"wiki-{tag}")
    await expect(page.locator("#mcp li", has_text=f"wiki-{tag}")).to_contain_text("teams: research")
    await page.get_by_role("button", name=f"Remove MCP server wiki-{tag}").click()
    await expect(page.locator("#mcp")).not_to_contain_text(f"wiki-{tag}")
    await page.goto("/admin#orgs")
    await page.locator("details.org", has_text=f"lab-{tag}").locator("summary").click()
    await shoot(page, "admin")

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    await page.get_by_label("Actor").fill(people.admin.user_id)
    await page.get_by_role("button", name="Show events").click()
    events = page.locator("#audit-events")
    await expect(events.locator("tr", has_text="ModelRegistered").first).to_contain_text(f"llama-{tag}")
    await expect(events.locator("tr", has_text="OrgCreated").first).to_contain_text("admin")
    # Newest first, named, each change readable: the org's limits before and after.
    await expect(events.locator("tr").nth(1)).to_contain_text("admin")
    limits_row = events.locator("tr", has_text="OrgLimitsSet").first
    await expect(limits_row).to_contain_text("requests per minute: 120")
    # By kind and by the actor's email too.
    await page.goto("/admin/audit?kind=Model")
    await expect(events.locator("tbody tr").first).to_contain_text("Model")
    await expect(events).not_to_contain_text("OrgCreated")
    await page.goto("/admin/audit")
    # The org's state at the moment it was created: no limits yet.
    await events.locator("tr", has_text="OrgCreated").first.get_by_role("link", name=f"lab-{tag}").click()
    state = page.locator("#state-json")
    await expect(state).to_contain_text(f'"name": "lab-{tag}"')
    await expect(state).not_to_contain_text('"requests_per_minute": 120')
    await shoot(page, "audit")

    # Leave the shared catalogue as it was.
    await page.goto("/admin")
    await page.get_by_role("button", name=f"Remove model llama-{tag}").click()
    await page.get_by_role("button", name=f"Remove endpoint vllm-{tag}").click()
    await expect(page.locator("#admin-endpoints")).not_to_contain_text(f"vllm-{tag}")
    await context.close()


async def test_the_admin_pages_are_neither_offered_nor_allowed_to_others(
    stack, browser: Browser, people: People
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    await expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    await expect(page.get_by_role("link", name="Audit")).to_have_count(0)
    await page.goto("/admin/audit")
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    # Forced: the directory refuses an Org-Admin's attempt to add an endpoint.
    await page.goto("/")
    await page.evaluate(
        """() => {
            const form = document.createElement("form");
            form.method = "post"; form.action = "/admin/endpoints";
            const add = (n, v) => { const i = document.createElement("input"); i.type = "hidden";
                                    i.name = n; i.value = v; form.appendChild(i); };
            add("csrf_token", document.querySelector("input[name=csrf_token]").value);
            add("slug", "rogue"); add("url", "http://evil.example/v1"); add("provider", "openai");
            document.body.appendChild(form); form.submit();
        }"""
    )
    await expect(page.get_by_role("alert")).to_contain_text("Admin")
    await context.close()


async def test_pages_fit_a_phone(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.team_admin, width=390)
    for path in ("/", f"/teams/{people.team_id}", "/usage"):
        await page.goto(path)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} scrolls sideways on a phone by {overflow}px"
    await page.goto("/")
    await shoot(page, "tokens-phone")
    await context.close()


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
    .filter(e => e.tagName === 'BUTTON'
        ? !(e.textContent.trim() || e.getAttribute('aria-label'))
        : !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map(e => e.outerHTML.slice(0, 80))"""


async def test_every_field_is_labelled_and_the_keyboard_reaches_the_content(
    stack, browser: Browser, people: People
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    for path in ("/", "/teams", f"/teams/{people.team_id}", "/models", "/usage", "/admin", "/admin/audit"):
        await page.goto(path)
        assert await page.evaluate(UNLABELLED) == [], path
    await page.goto("/")
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    await context.close()
