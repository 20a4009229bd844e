"""The user guide (the seed document, kept verbatim in ``user_guide.md``) walked element by element in
headless Chromium: every page, section, button, field and column it names is found on its page, as the role
the guide says uses it, and the buttons it describes do what it says.

What the product deliberately names differently is declared in ``RENAMED`` with the reason; the guide's
quoted names and its sections must each be walked or declared, so a guide that grows fails this test until
the walk follows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from ui_browser_support import CHROMIUM, People, shoot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]

GUIDE = Path(__file__).with_name("user_guide.md")

# Guide term -> (what the product shows instead, why).
RENAMED: dict[str, tuple[str, str]] = {
    "Admin Panel": (
        "Admin (nav link and page)",
        "Aqueduct has no Django Admin: the Admin page manages orgs, users, endpoints, models, terms and "
        "MCP servers through the directory API, with the same rules as every other client.",
    ),
    "expiration date": ("Expires on", "a date field reads better as the day the token stops working"),
    "ðŸ”„": ("↻ Regenerate", "a word with the icon: screen readers and new users need the action named"),
    "ðŸ—‘": ("✕ Delete", "a word with the icon, for the same reason; the guide's emoji is mis-encoded"),  # noqa: RUF001
    "default organization limits": (
        "Organisation default limits",
        "the product uses British spelling throughout",
    ),
    "Requests per Minute": ("Requests per minute", "sentence case, like every other label"),
    "Input Tokens per Minute": ("Input tokens per minute", "sentence case"),
    "Output Tokens per Minute": ("Output tokens per minute", "sentence case"),
    "promoted to Team-Admin": ("Make Team-Admin", "the button says what it does to the member"),
    "openai.api_base / openai.ChatCompletion": (
        "OpenAI(base_url=...).chat.completions.create",
        "the guide's example uses the pre-1.0 openai SDK, which no longer exists; the Models page shows the "
        "current client with the gateway's real base URL",
    ),
}

# The guide's sections (## / ###) and quoted names this walk covers (each is checked below).
WALKED_SECTIONS = {
    "Navigation",
    "Tokens Page",
    "Teams Page",
    "Team Detail Page",
    "Models Page",
    "Admin Panel",
    "Example: OpenAI-Compatible API Call",
}
WALKED_QUOTED = {"Create New Token", "Create New Team", "Add Service Account", "Add Users to Team"}


def test_the_walk_covers_every_section_and_named_element_of_the_guide() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    sections = set(re.findall(r"^#{2,3} (.+?)\s*$", text, re.MULTILINE))
    quoted = set(re.findall(r'"([^"\n]{1,40})"', text.split("```python")[0]))
    assert sections == WALKED_SECTIONS, sections ^ WALKED_SECTIONS
    assert quoted <= WALKED_QUOTED | set(RENAMED), quoted - WALKED_QUOTED - set(RENAMED)
    for term in RENAMED:
        if "/" not in term:
            assert term in text, f"{term!r} is declared renamed but the guide does not name it"


async def _admin_headers(stack) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=20) as http:
        pair = await http.post(
            f"{stack.urls['auth']}/auth/token",
            json={"username": stack.admin_username, "password": stack.admin_password},
        )
        pair.raise_for_status()
    return {"Authorization": f"Bearer {pair.json()['access_token']}"}


async def _walk_tokens_page(page: Page, tag: str) -> None:
    # "By default, the application opens on the Tokens page" with personal and service-account tokens.
    await page.goto("/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tokens")
    await expect(page.get_by_role("heading", name="Your tokens")).to_be_visible()
    await expect(page.get_by_role("heading", name="Service account tokens")).to_be_visible()
    # "click the "Create New Token" button to open the token creation form": a name and an expiration date.
    create = page.locator("details#create-token")
    await expect(create.locator("summary")).to_have_text("Create New Token")
    if not await create.evaluate("d => d.open"):  # open already while the user has no token
        await create.locator("summary").click()
    form = page.locator("form[action='/tokens']")
    await expect(form.get_by_label("Name")).to_be_visible()
    await expect(form.get_by_label("Expires on")).to_have_attribute("type", "date")  # blank: never expires
    await form.get_by_label("Name").fill(f"guide {tag}")
    await form.get_by_role("button", name="Create token").click()
    # "Users must copy and save the token value upon creation"; "only a preview of the token is shown".
    value = await page.locator("#new-secret").input_value()
    assert value.startswith("aq-")
    tokens = page.locator("#personal-tokens")
    await expect(tokens.locator("th", has_text="Preview")).to_be_visible()
    row = tokens.locator("tr[data-token-id]", has_text=f"guide {tag}")
    await expect(row).to_contain_text(f"{value[:7]}...{value[-4:]}")
    await expect(row).not_to_contain_text(value)
    await expect(row).to_contain_text("never")  # no expiration date: never expires
    # "a fixed limit to the number of tokens a user can generate".
    await expect(page.locator("#token-cap")).to_contain_text("(per-user limit)")
    # Regenerate ("🔄") gives a new value; delete ("🗑") removes the token.
    await row.get_by_role("button", name=f"Regenerate guide {tag}").click()
    regenerated = await page.locator("#new-secret").input_value()
    assert regenerated.startswith("aq-") and regenerated != value
    await shoot(page, "guide-tokens")
    await (
        tokens.locator("tr[data-token-id]", has_text=f"guide {tag}")
        .get_by_role("button", name=f"Delete guide {tag}")
        .click()
    )
    await expect(page.locator("#personal-tokens tr[data-token-id]", has_text=f"guide {tag}")).to_have_count(0)


async def test_a_user_walks_the_guide(stack, browser: Browser, people: People) -> None:
    tag = os.urandom(2).hex()
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    try:
        # Navigation: the Tokens, Teams and Models pages (the Admin Panel is the Admin's: not offered).
        nav = page.get_by_role("navigation", name="Main")
        for name in ("Tokens", "Teams", "Models"):
            await expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
        await expect(nav.get_by_role("link", name="Admin", exact=True)).to_have_count(0)

        await _walk_tokens_page(page, tag)

        # Teams page: the list of teams and the default organization limits, with the 429 they cause.
        await nav.get_by_role("link", name="Teams", exact=True).click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Teams")
        await expect(page.locator("#teams")).to_contain_text("research")
        limits = page.locator("section", has=page.get_by_role("heading", name="Organisation default limits"))
        for label in ("Requests per minute", "Input tokens per minute", "Output tokens per minute"):
            await expect(limits.get_by_role("rowheader", name=label)).to_be_visible()
        await expect(limits).to_contain_text("429 (Too Many Requests)")
        await expect(page.get_by_text("Create New Team")).to_have_count(0)  # Organization Admins only

        # Team Detail page: clicking a team in the list; its limits (falling back to the org's), service
        # accounts, members with their role tags.
        await page.locator("#teams").get_by_role("link", name="research").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("research")
        team_limits = page.locator("section", has=page.get_by_role("heading", name="Team limits"))
        await expect(team_limits.get_by_role("rowheader", name="Requests per minute")).to_be_visible()
        await expect(team_limits).to_contain_text("org default")
        await expect(page.get_by_role("heading", name="Service accounts")).to_be_visible()
        await expect(page.get_by_text("Add Service Account")).to_have_count(0)  # Team-Admins only
        members = page.locator("#members")
        await expect(members.locator("tr", has_text=people.user.name)).to_contain_text("User")
        await expect(page.get_by_role("heading", name="Add Users to Team")).to_have_count(0)

        # Models page: endpoints with their slug, the internal URL and the gateway path, and their models.
        await nav.get_by_role("link", name="Models", exact=True).click()
        endpoint = page.locator("section", has=page.get_by_role("heading", name="Endpoint fake"))
        await expect(endpoint.get_by_role("rowheader", name="Internal URL")).to_be_visible()
        await expect(endpoint.get_by_role("rowheader", name="Gateway URL")).to_be_visible()
        await expect(endpoint).to_contain_text(f"{stack.urls['proxy']}/fake/v1")
        await expect(endpoint.locator("tr[data-model='fake-model']")).to_be_visible()
        # Example: an OpenAI-compatible call with the official SDK, the token and a model name.
        snippet = page.locator("#sdk-snippet")
        await expect(snippet).to_contain_text("from openai import OpenAI")
        await expect(snippet).to_contain_text("YOUR_AQUEDUCT_TOKEN")
        await expect(snippet).to_contain_text('model="fake-model"')
        await expect(snippet).to_contain_text("Hello, who are you?")
        await shoot(page, "guide-models")
    finally:
        await context.close()


async def test_an_org_admin_and_a_team_admin_walk_the_team_parts_of_the_guide(
    stack, browser: Browser, people: People
) -> None:
    tag = os.urandom(2).hex()
    team_name = f"guide-{tag}"
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    try:
        # "Organization Admins can create new teams using the "Create New Team" button": name, description.
        await page.goto("/teams")
        await page.get_by_text("Create New Team").click()
        await page.get_by_label("Team name").fill(team_name)
        await page.get_by_label("Description").fill("Walking the user guide")
        await page.get_by_role("button", name="Create team").click()
        await page.goto("/teams")
        await page.locator("#teams").get_by_role("link", name=team_name).click()
        team_url = page.url
        # "Add Users to Team": any user in the organization; the Team-Admin, a user and the Org-Admin.
        await expect(page.get_by_role("heading", name="Add Users to Team")).to_be_visible()
        for person, as_admin in ((people.team_admin, True), (people.user, False), (people.org_admin, False)):
            await page.get_by_label("Find users").fill(person.name)
            await page.get_by_role("button", name="Find", exact=True).click()
            await page.get_by_label("Users of the organisation").select_option(value=person.user_id)
            if as_admin:
                await page.get_by_label("as Team-Admin").check()
            await page.get_by_role("button", name="Add to team").click()
            await expect(page.locator("#members")).to_contain_text(person.name)
    finally:
        await context.close()
    team_id = team_url.rstrip("/").rsplit("/", 1)[1]
    async with httpx.AsyncClient(timeout=20) as http:  # the Admin too, for the fourth role tag
        (
            await http.post(
                f"{stack.urls['directory']}/api/teams/{team_id}/members",
                json={"user_id": people.admin.user_id},
                headers=await _admin_headers(stack),
            )
        ).raise_for_status()

    # The Team-Admin's session from before: the UI reads their current roles at each page load, so the
    # new team's controls show without signing in again.
    context, page = await sign_in(browser, stack.urls["ui"], people.team_admin)
    try:
        await page.goto(team_url)
        # "Each member has a tag indicating their permissions (User, Team-Admin, Org-Admin, or Admin)".
        members = page.locator("#members")
        for person, role in (
            (people.user, "User"),
            (people.team_admin, "Team-Admin"),
            (people.org_admin, "Org-Admin"),
        ):
            await expect(members.locator("tr", has_text=person.name).locator(".tag")).to_have_text(role)
        await expect(members.locator(f"tr[data-user-id='{people.admin.user_id}'] .tag")).to_have_text("Admin")

        # "Add Service Account": a name and a description; a token is generated, owned by its creator.
        await page.get_by_text("Add Service Account").click()
        await page.get_by_label("Name", exact=True).fill(f"bot-{tag}")
        await page.get_by_label("Description", exact=True).fill("Guide walk")
        await page.get_by_role("button", name="Create service account").click()
        value = await page.locator("#new-secret").input_value()
        assert value.startswith("aq-")
        accounts = page.locator("#service-accounts")
        for column in ("Name", "Description", "Owner", "Token"):
            await expect(accounts.locator("th", has_text=column)).to_be_visible()
        row = accounts.locator("tr[data-sa-id]", has_text=f"bot-{tag}")
        await expect(row).to_contain_text(people.team_admin.name)
        # A user who owns a service account cannot be removed from the team.
        owner = members.locator("tr", has_text=people.team_admin.name)
        await expect(owner).to_contain_text(f"owns bot-{tag}")
        # Edited (name, description), its ownership transferred to another member, its token regenerated.
        await page.get_by_text(f"Edit or transfer “bot-{tag}”").click()
        await page.locator("form[action$='/edit']").get_by_label("Description").fill("Guide walk, edited")
        await page.locator("form[action$='/edit']").get_by_role("button", name="Save").click()
        await expect(accounts).to_contain_text("Guide walk, edited")
        await page.get_by_text(f"Edit or transfer “bot-{tag}”").click()
        await page.get_by_label("New owner").select_option(value=people.user.user_id)
        await page.get_by_role("button", name="Transfer ownership").click()
        await expect(accounts.locator("tr[data-sa-id]", has_text=f"bot-{tag}")).to_contain_text(
            people.user.name
        )
        await page.get_by_role("button", name=f"Regenerate token of bot-{tag}").click()
        assert (await page.locator("#new-secret").input_value()) != value
        # Standard users can be promoted to Team-Admin ...
        await (
            members.locator("tr", has_text=people.user.name)
            .get_by_role("button", name=f"Promote {people.user.name} to Team-Admin")
            .click()
        )
        await expect(members.locator("tr", has_text=people.user.name).locator(".tag")).to_have_text(
            "Team-Admin"
        )
        await shoot(page, "guide-team-detail")
        # ... deleting the service account deletes its token; then its owner can be removed.
        await page.get_by_role("button", name=f"Delete service account bot-{tag}").click()
        await expect(page.locator("#service-accounts tr[data-sa-id]", has_text=f"bot-{tag}")).to_have_count(0)
        await (
            members.locator("tr", has_text=people.user.name)
            .get_by_role("button", name=f"Remove {people.user.name}")
            .click()
        )
        await expect(page.locator("#members")).not_to_contain_text(people.user.name)
    finally:
        await context.close()

    # "Organization Admins can also delete teams using the delete button in the team list".
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    try:
        await page.goto("/teams")
        await page.get_by_role("button", name=f"Delete team {team_name}").click()
        await expect(page.locator("#teams")).not_to_contain_text(team_name)
    finally:
        await context.close()


async def test_an_admin_walks_the_admin_panel(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    try:
        # The Admin Panel ("Admin"): Admins add and edit endpoints and models, and change org limits.
        nav = page.get_by_role("navigation", name="Main")
        for name in ("Tokens", "Teams", "Models", "Admin"):
            await expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
        await nav.get_by_role("link", name="Admin", exact=True).click()
        for heading in ("Organisations", "Endpoints", "Models"):
            await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        await expect(page.locator("summary", has_text="Add endpoint")).to_be_visible()
        await expect(page.locator("summary", has_text="Add model")).to_be_visible()
        await expect(page.locator("summary", has_text="Edit “fake”")).to_be_visible()
        # "Admins can modify these limits in the Admin Panel": the Teams page links there for an Admin.
        await page.goto("/teams")
        await page.get_by_role("link", name="Change them in Admin").click()
        await expect(page).to_have_url(re.compile(r"/admin#orgs$"))
    finally:
        await context.close()
