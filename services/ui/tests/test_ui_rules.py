"""What each role is offered, and how form fields become API values."""

from __future__ import annotations

from datetime import date

import pytest

from aqueduct_libs.sessions import SessionClaims
from aqueduct_ui.domain.forms import (
    FormError,
    parse_api_key_env,
    parse_budgets,
    parse_expiry,
    parse_limits,
    parse_model_limits,
    parse_price,
    parse_url,
    require_text,
)
from aqueduct_ui.domain.viewer import Viewer, role_tag
from aqueduct_ui.entrypoints.web.render import http_href, safe_next


def viewer(**claims: object) -> Viewer:
    base = {"sub": "u1", "sid": "s", "org": "org-1", "exp": 2, "iat": 1}
    return Viewer.from_claims(SessionClaims.model_validate({**base, **claims}))


def test_roles_and_what_they_manage() -> None:
    user = viewer(teams=["t1"])
    team_admin = viewer(teams=["t1"], team_admin=["t1"])
    org_admin = viewer(org_admin=True)
    admin = viewer(admin=True, org="org-9")
    assert [v.role for v in (user, team_admin, org_admin, admin)] == [
        "User",
        "Team-Admin",
        "Org-Admin",
        "Admin",
    ]
    assert not user.manages_team("t1") and team_admin.manages_team("t1") and not team_admin.manages_team("t2")
    assert org_admin.manages_team("t2", "org-1") and not org_admin.manages_org("org-2")
    assert admin.manages_org("org-2") and admin.can_administer
    assert not any(v.can_create_teams for v in (user, team_admin)) and org_admin.can_create_teams
    assert user.usage_scopes == ("model", "token")
    assert (
        "user" in team_admin.usage_scopes
        and "org" in admin.usage_scopes
        and "org" not in org_admin.usage_scopes
    )


def test_member_role_tags_show_the_strongest_role() -> None:
    assert role_tag({"team_admin": False}) == "User"
    assert role_tag({"team_admin": True}) == "Team-Admin"
    assert role_tag({"team_admin": True, "org_admin": True}) == "Org-Admin"
    assert role_tag({"admin": True, "org_admin": True}) == "Admin"


def test_expiry_is_the_end_of_the_chosen_day_and_never_in_the_past() -> None:
    today = date(2026, 11, 22)
    assert parse_expiry("", today) is None
    assert parse_expiry("2026-12-01", today) == "2026-12-01T23:59:59+00:00"
    assert parse_expiry("2026-11-22", today) == "2026-11-22T23:59:59+00:00"
    with pytest.raises(FormError, match="today or later"):
        parse_expiry("2026-11-21", today)
    with pytest.raises(FormError, match="YYYY-MM-DD"):
        parse_expiry("next week", today)


def test_blank_limits_inherit_and_bad_ones_are_explained() -> None:
    assert parse_limits({"requests_per_minute": "1,000", "input_tokens_per_minute": ""}) == {
        "requests_per_minute": 1000,
        "input_tokens_per_minute": None,
        "output_tokens_per_minute": None,
    }
    with pytest.raises(FormError, match="Requests per minute"):
        parse_limits({"requests_per_minute": "-5"})
    assert parse_budgets({"monthly_usd": "$12.50", "monthly_tokens": "2,000,000"}) == {
        "daily_usd": None,
        "monthly_usd": "12.50",
        "daily_tokens": None,
        "monthly_tokens": 2_000_000,
    }
    with pytest.raises(FormError, match="Daily budget"):
        parse_budgets({"daily_usd": "lots"})
    with pytest.raises(FormError, match=r"Daily budget \(tokens\) must be a whole number"):
        parse_budgets({"daily_tokens": "1.5"})


@pytest.mark.parametrize("typed", ["5,5", "0,15", "1,0", "12,50", "1,00,000", ",5"])
def test_a_decimal_comma_is_refused_not_read_as_a_thousands_separator(typed: str) -> None:
    """ "5,5" meant five and a half: read as 55 it set a budget ten times too high (and "0,15" a price a
    hundred times too high). A comma is taken only between groups of three digits."""
    with pytest.raises(FormError, match="point for decimals"):
        parse_budgets({"daily_usd": typed})
    with pytest.raises(FormError, match="point for decimals"):
        parse_price(typed, "Input price")
    with pytest.raises(FormError, match="comma only between thousands"):
        parse_limits({"requests_per_minute": typed})


def test_thousands_separators_still_work() -> None:
    assert parse_budgets({"daily_usd": "$1,000.50", "monthly_usd": "1,234,567"})["daily_usd"] == "1000.50"
    assert parse_price("1,000", "Input price") == "1000"
    assert parse_limits({"requests_per_minute": "12,000"})["requests_per_minute"] == 12000


def test_per_model_limits_are_one_row_per_model_and_an_all_blank_row_is_left_out() -> None:
    form = {
        "csrf_token": "x",
        "ml:requests_per_minute:meta/llama-3.1:8b": "1,000",
        "ml:output_tokens_per_minute:meta/llama-3.1:8b": "",
        "ml:requests_per_minute:gpt-4o": "",
    }
    assert parse_model_limits(form) == {"meta/llama-3.1:8b": {"requests_per_minute": 1000}}
    with pytest.raises(FormError, match="Requests per minute of gpt-4o must be a whole number"):
        parse_model_limits({"ml:requests_per_minute:gpt-4o": "ten"})
    with pytest.raises(FormError, match="Unknown per-model limit"):
        parse_model_limits({"ml:cost:gpt-4o": "1"})


def test_catalogue_fields_take_names_urls_and_prices_never_key_values() -> None:
    assert parse_api_key_env(" OPENAI_API_KEY ") == "OPENAI_API_KEY"
    assert parse_api_key_env("${VLLM_KEY}") == "VLLM_KEY"
    assert parse_api_key_env("") == ""  # no key
    with pytest.raises(FormError, match="not the key"):
        parse_api_key_env("sk-proj-abc123")
    assert parse_url(" https://api.openai.com/v1 ") == "https://api.openai.com/v1"
    with pytest.raises(FormError, match="http:// or https://"):
        parse_url("ftp://host/v1")
    assert parse_price("0.50", "Input") == "0.50" and parse_price(" ", "Input") is None
    with pytest.raises(FormError, match="Input must be zero or more"):
        parse_price("-1", "Input")


def test_required_text() -> None:
    assert require_text("  laptop ", "Name") == "laptop"
    with pytest.raises(FormError, match="Name is required"):
        require_text("   ", "Name")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/teams?x=1", "/teams?x=1"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil", "/"),
        (None, "/"),
    ],
)
def test_only_local_redirects(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_only_http_urls_become_links() -> None:
    assert http_href("https://example.org/terms") == "https://example.org/terms"
    assert http_href(" HTTP://intranet/terms ") == "HTTP://intranet/terms"
    for stored_before_the_check in ("javascript:alert(1)", "data:text/html,<b>x</b>", "//evil.test", None):
        assert http_href(stored_before_the_check) == "#"
