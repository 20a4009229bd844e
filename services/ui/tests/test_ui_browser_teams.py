"""Teams and a team's page, walked in headless Chromium by each role.

Actions a role may not take are not offered; when forced (a hand-made form post with a valid CSRF
token), the directory API refuses them and the page says why.
"""

from __future__ import annotations

import os
import re

import httpx
import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import CHROMIUM, People, eventually, forced_post, shoot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


async def test_a_user_sees_the_team_but_no_admin_actions(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    await page.get_by_role("link", name="Teams").click()
    await expect(page.get_by_role("heading", name="Organisation default limits")).to_be_visible()
    await expect(page.locator("table.kv")).to_contain_text("100,000")
    await expect(page.get_by_text("Create New Team")).to_have_count(0)
    await expect(page.get_by_role("button", name=re.compile("Delete team"))).to_have_count(0)
    await expect(page.get_by_role("link", name="Admin")).to_have_count(0)

    await page.get_by_role("link", name="research").click()
    await expect(page.get_by_role("heading", name="research")).to_be_visible()
    # A plain user may not list the org's users, so other members may show by a short id; tags show.
    members = page.locator("#members")
    await expect(members.locator(f"tr[data-user-id='{people.team_admin.user_id}']")).to_contain_text(
        "Team-Admin"
    )
    await expect(members.locator(f"tr[data-user-id='{people.user.user_id}']")).to_contain_text("User")
    await expect(members.locator(f"tr[data-user-id='{people.user.user_id}']")).to_contain_text("(you)")
    await expect(page.get_by_text("Add Service Account")).to_have_count(0)
    await expect(page.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
    await expect(page.get_by_text("Add Users to Team")).to_have_count(0)

    # Forced: the API refuses and the page shows its reason.
    await forced_post(page, "/teams", {"org_id": people.org_id, "name": "sneaky", "description": ""})
    await expect(page.get_by_role("alert")).to_contain_text("Org-Admin")
    await forced_post(page, f"/teams/{people.team_id}/members/{people.team_admin.user_id}/remove", {})
    await expect(page.get_by_role("alert")).to_contain_text("Team-Admin")
    await expect(members.locator(f"tr[data-user-id='{people.team_admin.user_id}']")).to_be_visible()

    await page.goto("/admin")
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    await context.close()


async def test_a_team_admin_runs_service_accounts_and_members(
    stack, browser: Browser, people: People
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.team_admin)
    await page.goto(f"/teams/{people.team_id}")
    await expect(page.get_by_text("Edit team and limits")).to_have_count(0)  # Org-Admins only

    await page.get_by_text("Add Service Account").click()
    await page.get_by_label("Name", exact=True).fill("ci-bot")
    await page.get_by_label("Description", exact=True).fill("Nightly evaluation runs")
    await page.get_by_role("button", name="Create service account").click()
    value = await page.locator("#new-secret").input_value()
    assert value.startswith("aq-")
    row = page.locator("#service-accounts tr[data-sa-id]", has_text="ci-bot")
    await expect(row).to_contain_text(people.team_admin.name)
    await expect(row.locator("code")).to_have_text(f"{value[:7]}...{value[-4:]}")

    # The service account's token is on the Team-Admin's tokens page too, with its team.
    await page.goto("/")
    sa_token = page.locator("#service-tokens tr", has_text="ci-bot")
    await expect(sa_token).to_contain_text("research")
    await expect(sa_token.get_by_role("button", name="Regenerate token of ci-bot")).to_be_visible()
    # A Team-Admin's usage page may group by the members of their teams.
    await page.goto("/usage")
    assert "User" in await page.get_by_label("Group by").locator("option").all_inner_texts()
    await page.goto(f"/teams/{people.team_id}")

    # The owner cannot be removed while they own the service account: the API's reason is shown.
    member = page.locator("#members tr", has_text=people.team_admin.name)
    await expect(member).to_contain_text("owns ci-bot")

    # Add the outsider, then hand the service account over to them.
    await page.get_by_label("Users of the organisation").select_option(value=people.outsider.user_id)
    await page.get_by_role("button", name="Add to team").click()
    await expect(page.get_by_role("status")).to_contain_text("Added 1 member")
    await page.get_by_text("Edit or transfer “ci-bot”").click()
    await page.get_by_label("New owner").select_option(value=people.outsider.user_id)
    await page.get_by_role("button", name="Transfer ownership").click()
    await expect(page.get_by_role("status")).to_contain_text("Ownership transferred")
    await expect(page.locator("#service-accounts tr[data-sa-id]", has_text="ci-bot")).to_contain_text(
        people.outsider.name
    )

    outsider_row = page.locator("#members tr", has_text=people.outsider.name)
    await outsider_row.get_by_role("button", name=f"Remove {people.outsider.name}").click()
    await expect(page.get_by_role("alert")).to_contain_text("service account")
    await expect(page.locator("#members")).to_contain_text(people.outsider.name)

    # Promote the plain user; the role tag follows.
    user_row = page.locator("#members tr", has_text=people.user.name)
    await user_row.get_by_role("button", name=f"Promote {people.user.name} to Team-Admin").click()
    await expect(page.locator("#members tr", has_text=people.user.name)).to_contain_text("Team-Admin")
    # And back: the shared plain user stays a plain user for the other test modules.
    await (
        page.locator("#members tr", has_text=people.user.name)
        .get_by_role("button", name=f"Demote {people.user.name} to member")
        .click()
    )
    await expect(page.locator("#members tr", has_text=people.user.name).locator(".tag")).to_have_text("User")

    # Edit, regenerate, then delete the service account; now the outsider can go.
    await page.get_by_text("Edit or transfer “ci-bot”").click()
    await page.locator("form[action$='/edit']").get_by_label("Name", exact=True).fill("ci-runner")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#service-accounts")).to_contain_text("ci-runner")
    await page.get_by_role("button", name="Regenerate token of ci-runner").click()
    new_value = await page.locator("#new-secret").input_value()
    assert new_value.startswith("aq-") and new_value != value
    await shoot(page, "team-detail")
    await page.get_by_role("button", name="Delete service account ci-runner").click()
    await expect(page.get_by_role("status")).to_contain_text("Service account and its token deleted")
    await (
        page.locator("#members tr", has_text=people.outsider.name)
        .get_by_role("button", name=f"Remove {people.outsider.name}")
        .click()
    )
    await expect(page.get_by_role("status")).to_contain_text("Member removed")
    await expect(page.locator("#members")).not_to_contain_text(people.outsider.name)
    await context.close()


async def test_an_org_admin_creates_edits_and_deletes_a_team(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    await page.goto("/teams")
    await page.get_by_text("Create New Team").click()
    await page.get_by_label("Team name").fill("vision lab")
    await page.get_by_label("Description").fill("Image models")
    await page.get_by_role("button", name="Create team").click()
    await expect(page.get_by_role("heading", name="vision lab")).to_be_visible()

    # Team limits: blank fields fall back to the org's, which the page says.
    await page.get_by_text("Edit team and limits").click()
    await page.get_by_label("Requests per minute", exact=True).fill("60")
    await page.get_by_role("button", name="Save").click()
    limits = page.locator("table.kv")
    await expect(limits.locator("tr", has_text="Requests per minute")).to_contain_text("60")
    await expect(limits.locator("tr", has_text="Input tokens per minute")).to_contain_text("org default")

    await page.goto("/teams")
    await shoot(page, "teams")
    await page.get_by_role("button", name="Delete team vision lab").click()
    await expect(page.get_by_role("status")).to_contain_text("Team deleted")
    await expect(page.locator("#teams")).not_to_contain_text("vision lab")
    await context.close()


async def test_a_promotion_shows_at_the_next_page_load_and_a_demotion_takes_the_controls_away(
    stack, browser: Browser, people: People
) -> None:
    """Roles are read from the directory at each page load, not from the session's sign-in."""
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    lead_context, lead_page = await sign_in(browser, stack.urls["ui"], people.team_admin)
    promoted = False
    try:
        await page.goto(f"/teams/{people.team_id}")
        await expect(page.get_by_role("heading", name="research")).to_be_visible()
        await expect(page.get_by_text("Add Service Account")).to_have_count(0)

        # The Team-Admin promotes the user in their own browser; the user only reloads.
        await lead_page.goto(f"/teams/{people.team_id}")
        row = lead_page.locator("#members tr", has_text=people.user.name)
        await row.get_by_role("button", name=f"Promote {people.user.name} to Team-Admin").click()
        promoted = True
        await expect(lead_page.locator("#members tr", has_text=people.user.name)).to_contain_text(
            "Team-Admin"
        )
        await page.reload()
        await expect(page.get_by_text("Add Service Account")).to_be_visible()
        await expect(page.get_by_role("heading", name="Add Users to Team")).to_be_visible()

        # Demoted through the API (as the CLI does, not through this UI): the controls go at a page load
        # within the moment the UI keeps roles (2 s), and a forced request is refused.
        async with httpx.AsyncClient(timeout=20) as http:
            pair = await http.post(
                f"{stack.urls['auth']}/auth/token",
                json={"username": stack.admin_username, "password": stack.admin_password},
            )
            demoted = await http.post(
                f"{stack.urls['directory']}/api/teams/{people.team_id}/members/{people.user.user_id}/demote",
                headers={"Authorization": f"Bearer {pair.json()['access_token']}"},
            )
            demoted.raise_for_status()
        promoted = False

        async def controls_gone() -> None:
            await page.goto(f"/teams/{people.team_id}")
            await expect(page.get_by_text("Add Service Account")).to_have_count(0, timeout=500)

        await eventually(controls_gone, within=10)
        await expect(page.get_by_role("heading", name="Add Users to Team")).to_have_count(0)
        await expect(page.get_by_role("button", name=re.compile("^(Remove|Promote|Demote)"))).to_have_count(0)
        await forced_post(page, f"/teams/{people.team_id}/members/{people.team_admin.user_id}/remove", {})
        await expect(page.get_by_role("alert")).to_contain_text("Team-Admin")
    finally:
        if promoted:  # the shared plain user stays a plain user for the other test modules
            await lead_page.goto(f"/teams/{people.team_id}")
            await (
                lead_page.locator("#members tr", has_text=people.user.name)
                .get_by_role("button", name=f"Demote {people.user.name} to member")
                .click()
            )
        await lead_context.close()
        await context.close()
