"""Budget state in headless Chromium: a user whose budget is used up sees what is spent, what remains
(nothing) and when it resets on the Tokens and Usage pages, the team's budget on the team's page, and every
model marked unavailable on the Models page with the budget as the reason."""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import CHROMIUM, PASSWORD, People, Person, eventually, shoot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


async def _bearer(http: httpx.AsyncClient, auth: str, username: str, password: str) -> dict[str, str]:
    pair = await http.post(f"{auth}/auth/token", json={"username": username, "password": password})
    pair.raise_for_status()
    return {"Authorization": f"Bearer {pair.json()['access_token']}"}


async def test_a_user_with_a_used_up_budget_sees_it_and_the_models_unavailable(
    stack, browser: Browser, people: People
) -> None:
    tag = os.urandom(3).hex()
    directory, auth = stack.urls["directory"], stack.urls["auth"]
    bea = Person(f"bea-{tag}", PASSWORD, "Bea Budget", f"bea-{tag}@example.org")
    async with httpx.AsyncClient(timeout=20) as http:
        admin = await _bearer(http, auth, stack.admin_username, stack.admin_password)
        created = await http.post(
            f"{directory}/api/users",
            json={"email": bea.email, "name": bea.name, "org_id": people.org_id},
            headers=admin,
        )
        created.raise_for_status()
        bea.user_id = created.json()["id"]
        (
            await http.post(
                f"{auth}/auth/local-users",
                json={
                    "username": bea.username,
                    "password": bea.password,
                    "email": bea.email,
                    "name": bea.name,
                },
                headers=admin,
            )
        ).raise_for_status()
        team = await http.post(
            f"{directory}/api/teams", json={"org_id": people.org_id, "name": f"budgeted-{tag}"}, headers=admin
        )
        team.raise_for_status()
        team_id = team.json()["id"]
        for path, body in ((f"/api/teams/{team_id}/members", {"user_id": bea.user_id, "team_admin": True}),):
            (await http.post(f"{directory}{path}", json=body, headers=admin)).raise_for_status()
        (
            await http.patch(
                f"{directory}/api/teams/{team_id}", json={"budgets": {"monthly_usd": "250"}}, headers=admin
            )
        ).raise_for_status()

        # Bea spends through the gateway with her own token, the way any client would.
        mine = await _bearer(http, auth, bea.username, bea.password)
        token = await http.post(f"{directory}/api/tokens", json={"name": "budget probe"}, headers=mine)
        token.raise_for_status()
        client = openai.AsyncOpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=token.json()["value"])

        async def served() -> None:
            await client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "spend a little"}], max_tokens=4
            )

        await eventually(served, within=20)
        # Then an Org-Admin sets her a daily budget below what she spent today: it is used up.
        (
            await http.patch(
                f"{directory}/api/users/{bea.user_id}",
                json={"budgets": {"daily_usd": "0.000001"}},
                headers=admin,
            )
        ).raise_for_status()

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    context, page = await sign_in(browser, stack.urls["ui"], bea)
    try:
        state = page.locator("#budget-state")

        async def shown_used_up() -> None:
            await page.goto("/")
            await expect(state.locator("tr[data-scope='user']")).to_contain_text("used up", timeout=1_000)

        await eventually(shown_used_up, within=30)
        mine_row = state.locator("tr[data-scope='user']")
        await expect(mine_row).to_contain_text("You")
        await expect(mine_row).to_contain_text("Daily")
        await expect(mine_row).to_contain_text("$0.000001")  # the budget, never rounded to $0.00
        await expect(mine_row).to_contain_text(f"{tomorrow} 00:00 UTC")
        spent = (await mine_row.locator("td").nth(3).inner_text()).strip()
        assert spent.startswith("$0.0000") and spent != "$0.00", spent  # a few tens of micro-dollars
        await expect(mine_row.locator("td").nth(4)).to_contain_text("$0.00")
        team_row = state.locator("tr[data-scope='team']")
        await expect(team_row).to_contain_text(f"Team budgeted-{tag}")
        await expect(team_row).to_contain_text("Monthly")
        await expect(team_row).to_contain_text("$250.00")
        await shoot(page, "budgets-tokens-used-up")

        await page.goto("/models")
        await expect(page.locator("#models-blocked")).to_contain_text("budget used up")
        access = page.locator("tr[data-model='fake-model'] td").nth(4)
        await expect(access).to_contain_text("budget used up: your daily budget of $0.000001")
        await expect(access).not_to_contain_text("available to you")
        await shoot(page, "budgets-models-used-up")

        await page.goto("/usage")
        await expect(page.locator("#budget-state tr[data-scope='user']")).to_contain_text("used up")

        # The CSV export names its ids (user name and e-mail, token name) next to them.
        await page.goto("/usage?range=24h&group_by=user")
        async with page.expect_download() as waiting:
            await page.get_by_role("link", name="Export CSV").click()
        download = await waiting.value
        rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))  # noqa: ASYNC240
        assert [(r["user"], r["user_name"], r["user_email"]) for r in rows] == [
            (bea.user_id, bea.name, bea.email)
        ], rows
        tokens = await page.request.get("/usage/export.csv", params={"group_by": "token"})
        by_token = list(csv.DictReader(io.StringIO(await tokens.text())))
        assert [(r["token"], r["token_name"]) for r in by_token] == [
            (token.json()["token"]["id"], "budget probe")
        ]

        await page.goto(f"/teams/{team_id}")
        team_state = page.locator("#budget-state")
        await expect(team_state).to_contain_text("Monthly")
        await expect(team_state).to_contain_text("$250.00")
        await expect(team_state.locator("tr[data-scope='user']")).to_have_count(0)
    finally:
        await context.close()

    # Another user of the org with no budget of their own sees models available.
    context, page = await sign_in(browser, stack.urls["ui"], people.outsider)
    try:
        await page.goto("/models")
        await expect(page.locator("tr[data-model='fake-model'] td").nth(4)).to_contain_text(
            "available to you"
        )
        await expect(page.locator("#models-blocked")).to_have_count(0)
    finally:
        await context.close()
