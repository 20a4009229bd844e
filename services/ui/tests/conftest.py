"""Fixtures of the UI's browser tests: one Chromium and one set of people per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright
from ui_browser_support import CHROMIUM, CHROMIUM_ARGS, People, provision_people


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="session")
async def people(stack) -> People:
    """An Org-Admin, a Team-Admin and a User of the "research" team, and an org member outside it."""
    return await provision_people(stack.urls, stack.admin_username, stack.admin_password)
