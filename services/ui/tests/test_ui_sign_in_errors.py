"""The sign-in error page shows only the product's own texts: a reason code picks one, and nothing from
the address is ever shown (else a link could put a phishing text on the product's own page)."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from aqueduct_libs.settings import CommonSettings
from aqueduct_ui.bootstrap import bootstrap
from aqueduct_ui.domain.sign_in_errors import DEFAULT_MESSAGE, sign_in_error_message
from aqueduct_ui.settings import UISettings

PHISHING = "Your account is locked. Call +1-555-0100 and give your password to unlock it."


def _client() -> TestClient:
    common = CommonSettings(dev_mode=True, auth_url="http://127.0.0.1:9")  # nothing is asked of it
    return TestClient(
        asyncio.run(bootstrap(UISettings(oidc_enabled=True, common=common), use_bus=False)).app,
        follow_redirects=False,
    )


def test_text_in_the_address_is_never_shown() -> None:
    with _client() as client:
        for query in (
            {"message": PHISHING},
            {"reason": PHISHING},
            {"reason": "no_org", "message": PHISHING},
            {"detail": PHISHING, "error_description": PHISHING},
        ):
            page = client.get("/session/error", params=query)
            assert page.status_code == 400
            assert "Call +1-555-0100" not in page.text and "locked" not in page.text


def test_each_reason_shows_its_own_text_and_unknown_ones_the_general_text() -> None:
    with _client() as client:
        assert sign_in_error_message("no_org") in client.get("/session/error?reason=no_org").text
        assert "No organisation is mapped from your groups" in sign_in_error_message("no_org")
        assert DEFAULT_MESSAGE in client.get("/session/error?reason=made_up").text
        assert DEFAULT_MESSAGE in client.get("/session/error").text
    assert sign_in_error_message("not_started_here") != DEFAULT_MESSAGE
