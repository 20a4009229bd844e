"""The Dead letters page in headless Chromium, against the whole product: an Admin sees what accounting
could not store, with the reason, re-drives a letter whose cause is gone (stored once), and is told why
one that is still bad stays."""

from __future__ import annotations

import json
import os
import re

import httpx
import nats
import pytest
from playwright.async_api import Browser, expect
from ui_browser_support import CHROMIUM, People, eventually, shoot, sign_in

from aqueduct_libs import names
from aqueduct_libs.events import DeadLetter, UsageRecorded

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)"
    ),
]


async def _connect_as(stack, service: str) -> nats.NATS:
    runtime = json.loads((stack.data_dir / "runtime.json").read_text())
    host_port = re.fullmatch(r"nats://(.+)", runtime["nats_url"]).group(1)
    password = json.loads((stack.data_dir / "nats" / "users.json").read_text())[service]
    return await nats.connect(
        f"nats://{service}:{password}@{host_port}", inbox_prefix=names.inbox_prefix(service)
    )


def _event(event_id: str, **fields) -> dict:
    event = UsageRecorded(
        event_id=event_id,
        token_id="tok-ui-dl",
        user_id="user-ui-dl",
        org_id="org-ui-dl",
        endpoint="fake",
        model="fake-model",
        route="/v1/chat/completions",
        status_code=200,
    )
    return {**json.loads(event.model_dump_json()), **fields}


async def test_an_admin_lists_and_redrives_dead_letters(stack, browser: Browser, people: People) -> None:
    proxy = await _connect_as(stack, "proxy")
    await proxy.jetstream().publish(
        names.USAGE_SUBJECT, json.dumps(_event("ui-dl-bad", status_code=70000)).encode()
    )
    await proxy.close()
    # A letter whose cause is gone (as one dead-lettered while its table was lost would be).
    accounting = await _connect_as(stack, "accounting")
    fixed = DeadLetter(
        source_stream=names.USAGE_STREAM,
        source_subject=names.USAGE_SUBJECT,
        source_sequence=777_000,
        consumer="accounting-usage",
        reason="UNKNOWN_TABLE usage_events (the table was lost)",
        payload=json.dumps(_event("ui-dl-fixed")),
    )
    await accounting.jetstream().publish(
        names.dead_letter_subject(names.USAGE_STREAM, 777_000), fixed.model_dump_json().encode()
    )
    await accounting.close()

    context, page = await sign_in(browser, stack.urls["ui"], people.admin)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    await page.get_by_role("link", name="Dead letters").click()
    table = page.locator("#dead-letters")

    async def both_listed() -> None:
        await page.reload()
        await expect(table).to_contain_text("status_code 70000 is outside 100..599", timeout=1000)
        await expect(table).to_contain_text("UNKNOWN_TABLE", timeout=1000)

    await eventually(both_listed, within=30, interval=1.0)
    await shoot(page, "dead-letters")

    bad_row = table.locator("tr", has_text="status_code 70000")
    await bad_row.get_by_role("button", name=re.compile("Re-drive dead letter")).click()
    await expect(page.get_by_role("alert")).to_contain_text("status_code")
    await expect(table.locator("tr", has_text="status_code 70000")).to_have_count(1)

    fixed_row = table.locator("tr", has_text="UNKNOWN_TABLE")
    await fixed_row.get_by_role("button", name=re.compile("Re-drive dead letter")).click()
    await expect(page.get_by_role("status")).to_contain_text("re-driven and stored")
    await expect(page.locator("#dead-letters tr", has_text="UNKNOWN_TABLE")).to_have_count(0)
    await context.close()

    async with httpx.AsyncClient(timeout=30) as http:
        signed_in = await http.post(
            f"{stack.urls['auth']}/auth/token",
            json={"username": stack.admin_username, "password": stack.admin_password},
        )
        answer = await http.post(
            f"{stack.urls['accounting']}/api/sql",
            json={"query": "SELECT count() FROM usage_events WHERE event_id IN ('ui-dl-fixed', 'ui-dl-bad')"},
            headers={"Authorization": f"Bearer {signed_in.json()['access_token']}"},
        )
    assert answer.json()["rows"] == [[1]], "the re-driven event is stored once, the bad one never"


async def test_the_dead_letters_page_is_for_admins_only(stack, browser: Browser, people: People) -> None:
    context, page = await sign_in(browser, stack.urls["ui"], people.org_admin)
    await page.goto("/admin/dead-letters")
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    await context.close()
