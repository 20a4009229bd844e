"""Editing in place, role by role, in headless Chromium: the catalogue (Admin), per-user limits
(Org-Admin), team budgets and excluded models (Org-Admin; shown read-only to the team and its Team-Admin).

Controls a role may not use are not offered; a forced post (with the page's own CSRF token) reaches the
directory API, which refuses it and leaves the object as it was.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

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


@pytest.fixture
async def directory(stack) -> AsyncIterator[httpx.AsyncClient]:
    """The directory API as the Admin: setting up and checking what the pages did."""
    async with httpx.AsyncClient(timeout=20) as http:
        pair = await http.post(
            f"{stack.urls['auth']}/auth/token",
            json={"username": stack.admin_username, "password": stack.admin_password},
        )
        pair.raise_for_status()
        headers = {"Authorization": f"Bearer {pair.json()['access_token']}"}
    async with httpx.AsyncClient(base_url=stack.urls["directory"], headers=headers, timeout=20) as client:
        yield client


async def ok(response: Any) -> Any:
    answer = await response
    answer.raise_for_status()
    return answer.json() if answer.content else None


async def test_an_admin_edits_an_endpoint_and_a_model_and_the_proxy_follows(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient, upstream
) -> None:
    tag = os.urandom(2).hex()
    slug, model = f"edit-{tag}", f"edited-{tag}"
    await ok(directory.post("/api/endpoints", json={"slug": slug, "url": "http://127.0.0.1:9/v1"}))
    await ok(directory.post("/api/models", json={"name": model, "endpoint": slug}))
    token = await ok(directory.post("/api/tokens", json={"name": f"edit probe {tag}"}))
    proxy = stack.urls["proxy"]

    async def chat() -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as http:
            return await http.post(
                f"{proxy}/v1/chat/completions",
                headers={"Authorization": f"Bearer {token['value']}"},
                json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            )

    async def refused_upstream() -> None:
        assert (await chat()).status_code >= 500  # known to the proxy, but its endpoint is unreachable

    await eventually(refused_upstream)

    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    await page.goto("/admin#endpoints")
    edit = page.locator(f"details[data-endpoint='{slug}']")
    await edit.locator("summary").click()
    await expect(edit.get_by_label("Upstream URL")).to_have_value("http://127.0.0.1:9/v1")
    await edit.get_by_label("Upstream URL").fill(upstream.url)
    await edit.get_by_label("API key environment variable").fill("sk-not-a-variable-name")
    await edit.get_by_role("button", name=f"Save endpoint {slug}").click()
    # The browser's own check refuses first; bypassing it, the server says why.
    await expect(page.get_by_role("status")).to_have_count(0)
    await edit.get_by_label("API key environment variable").evaluate("e => e.removeAttribute('pattern')")
    await edit.get_by_role("button", name=f"Save endpoint {slug}").click()
    await expect(page.get_by_role("alert")).to_contain_text("variable name such as OPENAI_API_KEY")
    edit = page.locator(f"details[data-endpoint='{slug}']")
    # The refused form comes back open, as the Admin typed it, with the message next to the field.
    await expect(edit).to_have_attribute("open", "")
    await expect(edit.get_by_label("API key environment variable")).to_have_value("sk-not-a-variable-name")
    await expect(edit.locator(".field-error")).to_contain_text("variable name such as OPENAI_API_KEY")
    await edit.get_by_label("Upstream URL").fill(upstream.url)
    await edit.get_by_label("API key environment variable").fill("FAKE_UPSTREAM_KEY")
    await edit.get_by_role("button", name=f"Save endpoint {slug}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Endpoint “{slug}” saved.")
    row = page.locator("#admin-endpoints tr", has_text=slug).first
    await expect(row).to_contain_text(upstream.url)
    await expect(row).to_contain_text("${FAKE_UPSTREAM_KEY}")

    edit = page.locator(f"details[data-model='{model}']")
    await edit.locator("summary").click()
    await edit.get_by_label("Upstream model").fill(f"renamed-{tag}")
    await edit.get_by_label("Input $ per 1M tokens").fill("3")
    await edit.get_by_label("Output $ per 1M tokens").fill("abc")
    await edit.get_by_role("button", name=f"Save model {model}").click()
    await expect(page.get_by_role("alert")).to_contain_text("Output $ per 1M tokens must be an amount")
    edit = page.locator(f"details[data-model='{model}']")
    await expect(edit).to_have_attribute("open", "")
    await expect(edit.get_by_label("Output $ per 1M tokens")).to_have_value("abc")
    await edit.get_by_label("Upstream model").fill(f"renamed-{tag}")
    await edit.get_by_label("Input $ per 1M tokens").fill("3")
    await edit.get_by_label("Output $ per 1M tokens").fill("4.5")
    await edit.get_by_label("Fallbacks").select_option("fake-model")
    await edit.get_by_role("button", name=f"Save model {model}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Model “{model}” saved.")
    row = page.locator("#admin-models tr", has_text=model).first
    await expect(row).to_contain_text(f"renamed-{tag}")
    await expect(row).to_contain_text("4.5")
    await expect(page.locator(f"details[data-model='{model}'] summary")).to_contain_text(
        "falls back to fake-model"
    )
    assert "sk-fake-upstream-key" not in await page.content()  # only the variable's name is ever shown
    await page.locator(f"details[data-model='{model}'] summary").click()  # the form, for the screenshot
    await shoot(page, "admin-edit")
    await context.close()

    # Effective: the proxy now reaches the new URL and sends the renamed upstream model.
    async def served() -> None:
        answer = await chat()
        assert answer.status_code == 200, answer.text
        async with httpx.AsyncClient(timeout=10) as http:
            seen = (await http.get(f"{upstream.base}/_requests")).json()
        assert any(r["body"].get("model") == f"renamed-{tag}" for r in seen if isinstance(r["body"], dict))

    await eventually(served)

    await ok(directory.delete(f"/api/tokens/{token['token']['id']}"))
    await ok(directory.delete(f"/api/models/{model}"))
    await ok(directory.delete(f"/api/endpoints/{slug}"))


async def test_an_org_admin_sets_a_users_limits_and_a_teams_budgets_and_exclusions(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient
) -> None:
    tag = os.urandom(2).hex()
    spare = f"spare-{tag}"
    await ok(directory.post("/api/models", json={"name": spare, "endpoint": "fake"}))
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    try:
        await page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
        await expect(page.get_by_role("heading", name="Per-user limits")).to_be_visible()
        otto = people.outsider
        row = page.locator(f"#user-limits tr[data-user-id='{otto.user_id}']")
        await expect(row).to_contain_text("org default")
        # The Admin is in the org too, but an Org-Admin may not change an Admin: not offered.
        await expect(page.get_by_text("Edit limits of admin", exact=True)).to_have_count(0)
        edit = page.locator("details", has_text=f"Edit limits of {otto.name}")
        await edit.locator("summary").click()
        await edit.get_by_label("Requests per minute").fill("seven")
        await edit.get_by_label("Requests per minute").evaluate("e => e.removeAttribute('pattern')")
        await edit.get_by_role("button", name=f"Save limits of {otto.name}").click()
        await expect(page.get_by_role("alert")).to_contain_text("Requests per minute must be a whole number")
        edit = page.locator("details", has_text=f"Edit limits of {otto.name}")
        await expect(edit).to_have_attribute("open", "")
        await expect(edit.get_by_label("Requests per minute")).to_have_value("seven")
        await edit.get_by_label("Requests per minute").fill("7")
        await edit.get_by_label("Output tokens per minute").fill("12,000")
        await edit.get_by_role("button", name=f"Save limits of {otto.name}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Limits of {otto.name} saved.")
        await expect(row.locator("td").nth(3)).to_have_text("7")
        await expect(row.locator("td").nth(5)).to_have_text("12,000")
        user = await ok(directory.get(f"/api/users/{otto.user_id}"))
        assert user["limits"] == {"requests_per_minute": 7, "output_tokens_per_minute": 12000}
        await shoot(page, "users")

        await page.goto(f"/teams/{people.team_id}")
        budgets = page.locator("#budgets")
        await expect(budgets).to_contain_text("no budget")
        await budgets.locator("summary", has_text="Edit budgets and excluded models").click()
        await budgets.get_by_label("Daily budget (USD)").fill("12.50")
        await budgets.get_by_label("Monthly budget (tokens)").fill("2,000,000")
        await budgets.get_by_label("Excluded models").select_option(spare)
        await budgets.get_by_role("button", name="Save budgets and exclusions").click()
        await expect(page.get_by_role("status")).to_contain_text("Team budgets and excluded models saved.")
        budgets = page.locator("#budgets")
        await expect(budgets.locator("tr", has_text="Daily budget (USD)")).to_contain_text("12.50")
        await expect(budgets.locator("tr", has_text="Monthly budget (tokens)")).to_contain_text("2,000,000")
        await expect(page.locator("#team-excluded")).to_contain_text(spare)
        team = await ok(directory.get(f"/api/teams/{people.team_id}"))
        assert team["budgets"] == {"daily_usd": "12.50", "monthly_tokens": 2_000_000}
        assert team["excluded_models"] == [spare]
        await shoot(page, "team-budgets")
    finally:
        await context.close()
        await ok(directory.patch(f"/api/users/{people.outsider.user_id}", json={"limits": {}}))
        await ok(directory.patch(f"/api/teams/{people.team_id}", json={"budgets": {}, "excluded_models": []}))
        await ok(directory.delete(f"/api/models/{spare}"))


async def test_a_decimal_comma_in_a_budget_is_explained_and_changes_nothing(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient
) -> None:
    """ "5,5" (five and a half, in much of Europe) was saved as a $55 budget; a value the field's pattern
    refuses says what it wants in the browser's own message."""
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    try:
        await page.goto(f"/teams/{people.team_id}")
        budgets = page.locator("#budgets")
        await budgets.locator("summary", has_text="Edit budgets and excluded models").click()
        daily = budgets.get_by_label("Daily budget (USD)")
        await daily.fill("abc")
        # Chromium shows the title under its "Please match the requested format."
        assert "such as 25 or 12.50" in (await daily.get_attribute("title") or "")
        assert await daily.evaluate("e => !e.checkValidity()")
        await daily.fill("5,5")
        await budgets.get_by_role("button", name="Save budgets and exclusions").click()
        await expect(page.get_by_role("alert")).to_contain_text("use a point for decimals")
        team = await ok(directory.get(f"/api/teams/{people.team_id}"))
        assert team["budgets"] == {}
    finally:
        await context.close()
        await ok(directory.patch(f"/api/teams/{people.team_id}", json={"budgets": {}}))


async def test_a_team_admin_sets_the_teams_limits_up_to_the_orgs_but_not_its_exclusions(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.team_admin)
    try:
        await page.goto(f"/teams/{people.team_id}")
        await expect(page.get_by_text("Edit team and limits")).to_have_count(0)  # name: Org-Admins only
        await expect(page.get_by_text("Edit budgets and excluded models")).to_have_count(0)
        limits = page.locator("section", has=page.get_by_role("heading", name="Team limits"))
        await limits.locator("summary", has_text="Edit team limits").click()
        await limits.get_by_label("Requests per minute").fill("500")
        await limits.get_by_role("button", name="Save team limits").click()
        await expect(page.get_by_role("status")).to_contain_text("Team limits saved.")
        limits = page.locator("section", has=page.get_by_role("heading", name="Team limits"))
        await expect(limits.locator("tr", has_text="Requests per minute")).to_contain_text("500")
        team = await ok(directory.get(f"/api/teams/{people.team_id}"))
        assert team["limits"] == {"requests_per_minute": 500}

        # Above the org's default (100,000 in the test configuration): refused, the bound named.
        await limits.locator("summary", has_text="Edit team limits").click()
        await limits.get_by_label("Requests per minute").fill("200,000")
        await limits.get_by_role("button", name="Save team limits").click()
        await expect(page.get_by_role("alert")).to_contain_text(
            "requests per minute 200000 is above the org's 100000"
        )
        team = await ok(directory.get(f"/api/teams/{people.team_id}"))
        assert team["limits"] == {"requests_per_minute": 500}

        # Budgets (the org sets none: no bound) and a per-model limit.
        await page.goto(f"/teams/{people.team_id}")
        budgets = page.locator("#budgets")
        await budgets.locator("summary", has_text="Edit budgets").click()
        await expect(budgets.get_by_label("Excluded models")).to_have_count(0)
        await budgets.get_by_label("Daily budget (USD)").fill("3.25")
        await budgets.get_by_role("button", name="Save budgets").click()
        await expect(page.get_by_role("status")).to_contain_text("Team budgets saved.")
        per_model = page.locator("#team-model-limits")
        await per_model.locator("summary", has_text="Edit per-model limits").click()
        await per_model.get_by_label("Requests per minute of fake-model").fill("40")
        await per_model.get_by_role("button", name="Save per-model limits").click()
        await expect(page.get_by_role("status")).to_contain_text("Per-model limits of the team saved.")
        row = page.locator("#team-model-limit-table tr[data-model='fake-model']")
        await expect(row.locator("td").nth(1)).to_have_text("40")
        team = await ok(directory.get(f"/api/teams/{people.team_id}"))
        assert team["budgets"] == {"daily_usd": "3.25"}
        assert team["model_limits"] == {"fake-model": {"requests_per_minute": 40}}
        await shoot(page, "team-admin-limits")

        # Exclusions stay with Org-Admins: a forced post is refused and changes nothing.
        await forced_post(
            page, f"/teams/{people.team_id}/budgets", {"daily_usd": "1", "excluded_models": "x"}
        )
        await expect(page.get_by_role("alert")).to_contain_text("Org-Admin")
        team = await ok(directory.get(f"/api/teams/{people.team_id}"))
        assert team["budgets"] == {"daily_usd": "3.25"} and team["excluded_models"] == []

        # Their own limits, read-only; another user's limits are not theirs to change.
        await page.goto("/users")
        await expect(page.get_by_role("heading", name="Your limits")).to_be_visible()
        await expect(page.locator("#user-limits tbody tr")).to_have_count(1)
        await expect(page.get_by_text("Edit limits of")).to_have_count(0)
        await forced_post(page, f"/users/{people.user.user_id}/limits", {"requests_per_minute": "1"})
        await expect(page.get_by_role("alert")).to_contain_text("Org-Admin")
        assert (await ok(directory.get(f"/api/users/{people.user.user_id}")))["limits"] == {}
    finally:
        await context.close()
        await ok(
            directory.patch(
                f"/api/teams/{people.team_id}", json={"limits": {}, "budgets": {}, "model_limits": {}}
            )
        )


async def test_a_user_sees_no_edit_controls_and_forced_edits_are_refused(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient
) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="Users")).to_have_count(0)
    await page.get_by_role("link", name="Teams").click()
    await page.get_by_role("link", name="Your own limits").click()
    row = page.locator(f"#user-limits tr[data-user-id='{people.user.user_id}']")
    await expect(row).to_contain_text("(you)")
    await expect(page.get_by_text("Only an Org-Admin of your organisation can change them.")).to_be_visible()
    await expect(page.locator("form[action^='/users/']")).to_have_count(0)

    await forced_post(page, f"/users/{people.user.user_id}/limits", {"requests_per_minute": "999999"})
    await expect(page.get_by_role("alert")).to_contain_text("Org-Admin")
    assert (await ok(directory.get(f"/api/users/{people.user.user_id}")))["limits"] == {}

    await page.goto(f"/teams/{people.team_id}")
    await expect(page.get_by_text("Edit budgets and excluded models")).to_have_count(0)
    await expect(page.get_by_text("Edit team limits")).to_have_count(0)
    await forced_post(page, f"/teams/{people.team_id}/limits", {"requests_per_minute": "1"})
    await expect(page.get_by_role("alert")).to_contain_text("Team-Admin")
    assert (await ok(directory.get(f"/api/teams/{people.team_id}")))["limits"] == {}
    await forced_post(page, "/admin/models/fake-model", {"endpoint": "fake", "upstream_model": "evil"})
    await expect(page.get_by_role("alert")).to_contain_text("Admin")
    await forced_post(page, "/admin/endpoints/fake", {"url": "http://evil.example/v1", "provider": "openai"})
    await expect(page.get_by_role("alert")).to_contain_text("Admin")
    models = await ok(directory.get("/api/models"))
    assert next(m for m in models if m["name"] == "fake-model")["upstream_model"] == "fake-model"
    endpoints = await ok(directory.get("/api/endpoints"))
    assert "evil" not in next(e for e in endpoints if e["slug"] == "fake")["url"]
    await context.close()


async def test_an_org_admin_sets_a_users_budgets_exclusions_and_per_model_limits(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient
) -> None:
    otto = people.outsider
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    try:
        await page.goto("/users")
        await (
            page.locator(f"#user-limits tr[data-user-id='{otto.user_id}']")
            .get_by_role("link", name=otto.name)
            .click()
        )
        await expect(page.get_by_role("heading", name=otto.name)).to_be_visible()
        await expect(page.locator("#user-tokens")).to_have_count(0)  # token limits: Admins only
        budgets = page.locator("#user-budgets")
        await budgets.locator("summary").click()
        await budgets.get_by_label("Monthly budget (USD)").fill("$40")
        await budgets.get_by_label("Excluded models").select_option("fake-model")
        await budgets.get_by_role("button", name=f"Save budgets and exclusions of {otto.name}").click()
        await expect(page.get_by_role("status")).to_contain_text(
            f"Budgets and excluded models of {otto.name}"
        )
        await expect(page.locator("#user-excluded")).to_contain_text("fake-model")
        per_model = page.locator("#user-model-limits")
        await per_model.locator("summary").click()
        await per_model.get_by_label("Input tokens per minute of fake-model").fill("lots")
        await per_model.get_by_label("Input tokens per minute of fake-model").evaluate(
            "e => e.removeAttribute('pattern')"
        )
        await per_model.get_by_role("button", name=f"Save per-model limits of {otto.name}").click()
        await expect(page.get_by_role("alert")).to_contain_text(
            "Input tokens per minute of fake-model must be a whole number"
        )
        await page.goto(f"/users/{otto.user_id}")
        per_model = page.locator("#user-model-limits")
        await per_model.locator("summary").click()
        await per_model.get_by_label("Input tokens per minute of fake-model").fill("2,500")
        await per_model.get_by_role("button", name=f"Save per-model limits of {otto.name}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Per-model limits of {otto.name} saved.")
        row = page.locator("#user-model-limit-table tr[data-model='fake-model']")
        await expect(row.locator("td").nth(2)).to_have_text("2,500")
        user = await ok(directory.get(f"/api/users/{otto.user_id}"))
        assert user["budgets"] == {"monthly_usd": "40"} and user["excluded_models"] == ["fake-model"]
        assert user["model_limits"] == {"fake-model": {"input_tokens_per_minute": 2500}}
        await shoot(page, "user-page")

        # Token limits are an Admin's: a forced post by the Org-Admin is refused by the directory.
        token = await ok(directory.post("/api/tokens", json={"name": "org-admin probe"}))
        await forced_post(
            page, f"/users/{otto.user_id}/tokens/{token['token']['id']}/limits", {"requests_per_minute": "1"}
        )
        await expect(page.get_by_role("alert")).to_contain_text("Admin")
        assert (await ok(directory.get(f"/api/tokens/{token['token']['id']}")))["limits"] == {}
        await ok(directory.delete(f"/api/tokens/{token['token']['id']}"))
    finally:
        await context.close()
        await ok(
            directory.patch(
                f"/api/users/{otto.user_id}", json={"budgets": {}, "excluded_models": [], "model_limits": {}}
            )
        )

    # A plain user cannot set their own budgets, even with the page's CSRF token.
    context, page = await sign_in(browser, stack.urls["ui"], people.user)
    try:
        await page.goto(f"/users/{people.user.user_id}")
        await expect(page.locator("#user-budgets summary")).to_have_count(0)
        await forced_post(page, f"/users/{people.user.user_id}/budgets", {"daily_usd": "1000"})
        await expect(page.get_by_role("alert")).to_contain_text("Org-Admin")
        assert (await ok(directory.get(f"/api/users/{people.user.user_id}")))["budgets"] == {}
    finally:
        await context.close()


async def test_an_admin_sets_a_tokens_limits_and_removes_a_models_price(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient
) -> None:
    tag = os.urandom(2).hex()
    model = f"priced-{tag}"
    await ok(
        directory.post(
            "/api/models",
            json={
                "name": model,
                "endpoint": "fake",
                "input_price_per_million": "2",
                "output_price_per_million": "8",
            },
        )
    )
    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    try:
        # The Admin's own token, on their user page.
        token = await ok(directory.post("/api/tokens", json={"name": f"limited-{tag}"}))
        await page.goto(f"/users/{people.admin.user_id}")
        tokens = page.locator("#user-tokens")
        edit = tokens.locator("details", has_text=f"Edit limits of token limited-{tag}")
        await edit.locator("summary").click()
        await edit.get_by_label("Requests per minute").fill("5")
        await edit.get_by_role("button", name=f"Save limits of token limited-{tag}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Limits of token limited-{tag} saved.")
        row = page.locator(f"#token-limits tr[data-token-id='{token['token']['id']}']")
        await expect(row.locator("td").nth(1)).to_have_text("5")
        assert (await ok(directory.get(f"/api/tokens/{token['token']['id']}")))["limits"] == {
            "requests_per_minute": 5
        }
        await ok(directory.delete(f"/api/tokens/{token['token']['id']}"))

        await page.goto("/admin#models")
        edit = page.locator(f"details[data-model='{model}']")
        await edit.locator("summary").click()
        await expect(edit.get_by_label("Input $ per 1M tokens")).to_have_value("2")
        await edit.get_by_label("Input $ per 1M tokens").fill("")
        await edit.get_by_role("button", name=f"Save model {model}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Model “{model}” saved.")
        saved = next(m for m in await ok(directory.get("/api/models")) if m["name"] == model)
        assert saved["input_price_per_million"] is None and saved["output_price_per_million"] == "8"
    finally:
        await context.close()
        await ok(directory.delete(f"/api/models/{model}"))


async def test_an_admin_sets_the_limits_of_a_service_accounts_token(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient
) -> None:
    tag = os.urandom(2).hex()
    # Created by the team's Team-Admin (a service account is owned by a member of its team).
    async with httpx.AsyncClient(timeout=20) as http:
        pair = await ok(
            http.post(
                f"{stack.urls['auth']}/auth/token",
                json={"username": people.team_admin.username, "password": people.team_admin.password},
            )
        )
        made = await ok(
            http.post(
                f"{stack.urls['directory']}/api/teams/{people.team_id}/service-accounts",
                json={"name": f"bot-{tag}", "description": "runs the nightly jobs"},
                headers={"Authorization": f"Bearer {pair['access_token']}"},
            )
        )
    token_id = made["token"]["id"]
    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    try:
        await page.goto(f"/teams/{people.team_id}")
        edit = page.locator("details", has_text=f"Limits of the token of “bot-{tag}”")
        await edit.locator("summary").click()
        await edit.get_by_label("Requests per minute").fill("7")
        await edit.get_by_role("button", name=f"Save limits of the token of bot-{tag}").click()
        await expect(page.get_by_role("status")).to_contain_text("saved.")
        assert (await ok(directory.get(f"/api/tokens/{token_id}")))["limits"] == {"requests_per_minute": 7}
    finally:
        await context.close()
    # A Team-Admin of the team manages the account but is not offered its token's limits.
    context, page = await sign_in(browser, stack.urls["ui"], people.team_admin)
    try:
        await page.goto(f"/teams/{people.team_id}")
        await expect(page.locator("#service-accounts")).to_contain_text(f"bot-{tag}")
        await expect(page.get_by_text(f"Limits of the token of “bot-{tag}”")).to_have_count(0)
    finally:
        await context.close()
        await ok(directory.delete(f"/api/service-accounts/{made['service_account']['id']}"))


async def test_an_admin_sets_aliases_token_prices_and_the_responses_setting(
    stack, browser: Browser, people: People, directory: httpx.AsyncClient, upstream
) -> None:
    tag = os.urandom(2).hex()
    slug, model, alias = f"agents-{tag}", f"agent-model-{tag}", f"claude-sonnet-{tag}"
    await ok(directory.post("/api/endpoints", json={"slug": slug, "url": upstream.url}))
    await ok(
        directory.post("/api/models", json={"name": model, "endpoint": slug, "input_price_per_million": 3})
    )
    token = await ok(directory.post("/api/tokens", json={"name": f"alias probe {tag}"}))

    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    await page.goto("/admin#endpoints")
    edit = page.locator(f"details[data-endpoint='{slug}']")
    await edit.locator("summary").click()
    await expect(edit.get_by_label("Has the Responses API")).to_be_checked()
    await edit.get_by_label("Has the Responses API").uncheck()
    await edit.get_by_role("button", name=f"Save endpoint {slug}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Endpoint “{slug}” saved.")

    edit = page.locator(f"details[data-model='{model}']")
    await edit.locator("summary").click()
    await edit.get_by_label("Aliases").fill(f"{alias}, fake-model")  # fake-model is another model's name
    await edit.get_by_role("button", name=f"Save model {model}").click()
    await expect(page.get_by_role("alert")).to_contain_text("another model")
    edit = page.locator(f"details[data-model='{model}']")
    if await edit.get_attribute("open") is None:  # a refused form comes back open, as typed
        await edit.locator("summary").click()
    await edit.get_by_label("Aliases").fill(alias)
    await edit.get_by_label("Cached input (read) $ per 1M tokens").fill("0.3")
    await edit.get_by_label("Cache write (1 h) $ per 1M tokens").fill("6")
    await edit.get_by_role("button", name=f"Save model {model}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Model “{model}” saved.")
    await expect(page.locator("#admin-models tr", has_text=model).first).to_contain_text(alias)
    await context.close()

    saved = next(m for m in await ok(directory.get("/api/models")) if m["name"] == model)
    assert (saved["aliases"], saved["cached_input_price_per_million"]) == ([alias], "0.3")
    assert (saved["cache_write_1h_price_per_million"], saved["cache_write_price_per_million"]) == ("6", None)
    assert saved["input_price_per_million"] == "3.0"  # the form kept the price it showed
    endpoint = next(e for e in await ok(directory.get("/api/endpoints")) if e["slug"] == slug)
    assert endpoint["responses"] is False

    async def served_by_alias() -> None:
        async with httpx.AsyncClient(timeout=20) as http:
            answer = await http.post(
                f"{stack.urls['proxy']}/v1/responses",
                headers={"Authorization": f"Bearer {token['value']}"},
                json={"model": alias, "input": "hi", "max_output_tokens": 2},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"][0]["content"][0]["text"] == "tok0 tok1"  # translated to chat

    await eventually(served_by_alias)
    await ok(directory.delete(f"/api/tokens/{token['token']['id']}"))
    await ok(directory.delete(f"/api/models/{model}"))
    await ok(directory.delete(f"/api/endpoints/{slug}"))
