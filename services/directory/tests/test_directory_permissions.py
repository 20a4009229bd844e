"""The permission matrix: every role against every command, allowed and denied.

A denied command must record nothing, so each case compares the notification log before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from directory_testkit import make_app, make_world

from aqueduct_directory.application.audit import audit_events, state_at
from aqueduct_directory.application.config_apply import apply_config, parse_config
from aqueduct_directory.domain.errors import PermissionDeniedError
from aqueduct_directory.domain.grants import user_grant
from aqueduct_directory.domain.policy import SYSTEM

ROLES = ("admin", "org_admin", "team_admin", "member", "outsider")
ALL = set(ROLES)
ADMIN = {"admin"}
ORG_ADMINS = {"admin", "org_admin"}
TEAM_ADMINS = {"admin", "org_admin", "team_admin"}


def _sa(w) -> dict[str, Any]:
    return w.app.create_service_account(w.p(w.team_admin), w.team, "bot", "runs the nightly jobs")


def _member_token(w) -> str:
    return w.app.issue_token(w.p(w.member), "t")["token"]["id"]


def _endpoint(w) -> None:
    w.app.register_endpoint(SYSTEM, "ep", "http://ep/v1")


# name -> (setup(world) -> ctx, command(world, principal, ctx), roles allowed)
CASES: dict[str, tuple[Callable[[Any], Any], Callable[[Any, Any, Any], Any], set[str]]] = {
    "create org": (lambda w: None, lambda w, p, c: w.app.create_org(p, "new-org"), ADMIN),
    "set org limits": (
        lambda w: None,
        lambda w, p, c: w.app.update_org(p, w.org, limits={"requests_per_minute": 1}),
        ADMIN,
    ),
    "exclude models for org": (
        lambda w: None,
        lambda w, p, c: w.app.update_org(p, w.org, excluded_models=["x"]),
        ADMIN,
    ),
    "see org": (lambda w: None, lambda w, p, c: w.app.get_org(p, w.org), ALL - {"outsider"}),
    "create team": (lambda w: None, lambda w, p, c: w.app.create_team(p, w.org, "new-team"), ORG_ADMINS),
    "set team limits": (
        lambda w: None,
        lambda w, p, c: w.app.update_team(p, w.team, limits={"requests_per_minute": 1}),
        TEAM_ADMINS,
    ),
    "set team limits above the org's": (
        lambda w: None,
        lambda w, p, c: w.app.update_team(p, w.team, limits={"requests_per_minute": 61}),
        ORG_ADMINS,
    ),
    "set team budgets": (
        lambda w: None,
        lambda w, p, c: w.app.update_team(p, w.team, budgets={"daily_usd": "5"}),
        TEAM_ADMINS,
    ),
    "set team model limits": (
        lambda w: None,
        lambda w, p, c: w.app.update_team(p, w.team, model_limits={"m": {"requests_per_minute": 5}}),
        TEAM_ADMINS,
    ),
    "set another team's limits": (
        lambda w: None,
        lambda w, p, c: w.app.update_team(p, w.other_team, limits={"requests_per_minute": 1}),
        ORG_ADMINS,
    ),
    "rename team": (lambda w: None, lambda w, p, c: w.app.update_team(p, w.team, name="renamed"), ORG_ADMINS),
    "exclude models for team": (
        lambda w: None,
        lambda w, p, c: w.app.update_team(p, w.team, excluded_models=["x"]),
        ORG_ADMINS,
    ),
    "delete team": (lambda w: None, lambda w, p, c: w.app.delete_team(p, w.other_team), ORG_ADMINS),
    "add member": (
        lambda w: w.app.create_user(SYSTEM, w.org, "n@acme.test")["id"],
        lambda w, p, c: w.app.add_member(p, w.team, c),
        TEAM_ADMINS,
    ),
    "remove member": (
        lambda w: w.app.add_member(SYSTEM, w.team, w.app.create_user(SYSTEM, w.org, "n@acme.test")["id"]),
        lambda w, p, c: w.app.remove_member(p, w.team, c["members"][-1]["user_id"]),
        TEAM_ADMINS,
    ),
    "promote member": (
        lambda w: None,
        lambda w, p, c: w.app.promote_member(p, w.team, w.member),
        TEAM_ADMINS,
    ),
    "create user": (lambda w: None, lambda w, p, c: w.app.create_user(p, w.org, "n@acme.test"), ORG_ADMINS),
    "create admin user": (
        lambda w: None,
        lambda w, p, c: w.app.create_user(p, w.org, "n@acme.test", admin=True),
        ADMIN,
    ),
    "set user limits": (
        lambda w: None,
        lambda w, p, c: w.app.update_user(p, w.member, limits={"requests_per_minute": 1}),
        ORG_ADMINS,
    ),
    "grant org admin": (
        lambda w: None,
        lambda w, p, c: w.app.update_user(p, w.member, org_admin=True),
        ORG_ADMINS,
    ),
    "grant admin": (lambda w: None, lambda w, p, c: w.app.update_user(p, w.member, admin=True), ADMIN),
    "deactivate user": (lambda w: None, lambda w, p, c: w.app.deactivate_user(p, w.member), ORG_ADMINS),
    "see member": (
        lambda w: None,
        lambda w, p, c: w.app.get_user(p, w.member),
        {"admin", "org_admin", "member"},
    ),
    "issue own token": (lambda w: None, lambda w, p, c: w.app.issue_token(p, "mine"), ALL),
    "regenerate member's token": (
        _member_token,
        lambda w, p, c: w.app.regenerate_token(p, c),
        {"admin", "member"},
    ),
    "delete member's token": (_member_token, lambda w, p, c: w.app.revoke_token(p, c), {"admin", "member"}),
    "set token limits": (
        _member_token,
        lambda w, p, c: w.app.set_token_limits(p, c, {"requests_per_minute": 1}),
        ADMIN,
    ),
    "create service account": (
        lambda w: [w.app.add_member(SYSTEM, w.team, u) for u in (w.admin, w.org_admin)],
        lambda w, p, c: w.app.create_service_account(p, w.team, "bot", "runs the nightly jobs"),
        TEAM_ADMINS,
    ),
    "list service accounts": (
        lambda w: None,
        lambda w, p, c: w.app.list_service_accounts(p, w.team),
        ALL - {"outsider"},
    ),
    "rename service account": (
        _sa,
        lambda w, p, c: w.app.update_service_account(p, c["service_account"]["id"], name="robot"),
        TEAM_ADMINS,
    ),
    "regenerate service account token": (
        _sa,
        lambda w, p, c: w.app.regenerate_token(p, c["token"]["id"]),
        TEAM_ADMINS,
    ),
    "delete service account": (
        _sa,
        lambda w, p, c: w.app.delete_service_account(p, c["service_account"]["id"]),
        TEAM_ADMINS,
    ),
    "register endpoint": (
        lambda w: None,
        lambda w, p, c: w.app.register_endpoint(p, "ep", "http://ep/v1"),
        ADMIN,
    ),
    "change endpoint": (
        _endpoint,
        lambda w, p, c: w.app.update_endpoint(p, "ep", url="http://other/v1"),
        ADMIN,
    ),
    "remove endpoint": (_endpoint, lambda w, p, c: w.app.remove_endpoint(p, "ep"), ADMIN),
    "register model": (_endpoint, lambda w, p, c: w.app.register_model(p, "m", "ep"), ADMIN),
    "register MCP server": (
        lambda w: None,
        lambda w, p, c: w.app.register_mcp_server(p, "mcp", "http://mcp", [w.team]),
        ADMIN,
    ),
    "publish terms": (lambda w: None, lambda w, p, c: w.app.publish_terms(p, "v1", "http://tos/v1"), ADMIN),
    "apply config": (
        lambda w: None,
        lambda w, p, c: apply_config(w.app, p, parse_config("orgs: [{name: lab}]")),
        ADMIN,
    ),
    "read audit log": (lambda w: None, lambda w, p, c: audit_events(w.app, p), ADMIN),
    "read past state": (lambda w: None, lambda w, p, c: state_at(w.app, p, datetime.now(UTC), w.org), ADMIN),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_permission_matrix(case, role):
    world = make_world(make_app(None))
    setup, command, allowed = CASES[case]
    context = setup(world)
    principal = world.p(getattr(world, role))
    before = world.events()
    if role in allowed:
        command(world, principal, context)
    else:
        with pytest.raises(PermissionDeniedError):
            command(world, principal, context)
        assert world.events() == before, "a denied command recorded an event"


def test_every_event_names_its_actor(tmp_path):
    world = make_world(make_app(tmp_path))
    world.app.issue_token(world.p(world.member), "t")
    world.app.update_team(world.p(world.org_admin), world.team, description="changed")
    actors = [getattr(e, "actor", None) for _, e in world.app.iter_events()]
    assert None not in actors
    assert actors[-2:] == [world.member, world.org_admin]


def test_who_sees_which_users(tmp_path):
    world = make_world(make_app(None))
    everyone = {world.admin, world.org_admin, world.team_admin, world.member}
    seen = {role: {u["id"] for u in world.app.list_users(world.p(getattr(world, role)))} for role in ROLES}
    assert seen["admin"] == everyone | {world.outsider}
    assert seen["org_admin"] == seen["team_admin"] == everyone
    assert seen["member"] == {world.member} and seen["outsider"] == {world.outsider}


def test_a_team_admin_sets_the_teams_limits_and_budgets_within_the_orgs(tmp_path):
    world = make_world(make_app(tmp_path))
    app, ta = world.app, world.p(world.team_admin)
    app.update_org(
        SYSTEM,
        world.org,
        budgets={"daily_usd": "10", "monthly_tokens": 1_000_000},
        model_limits={"big": {"output_tokens_per_minute": 5_000}},
    )
    before = world.events()
    app.update_team(
        ta,
        world.team,
        limits={
            "requests_per_minute": 30,
            "input_tokens_per_minute": 9_999_999,
        },  # the org sets no input bound
        budgets={"daily_usd": "9.99", "monthly_tokens": 1_000_000, "monthly_usd": "500"},
        model_limits={"big": {"output_tokens_per_minute": 4_000}, "small": {"requests_per_minute": 900}},
    )
    assert world.events() == before + 3
    assert [e.actor for _, e in app.iter_events(before + 1)] == [world.team_admin] * 3
    grant = user_grant(app.state, app.state.users[world.member])
    assert grant is not None and grant.team_id == world.team
    assert grant.limits.requests_per_minute == 30 and grant.limits.input_tokens_per_minute == 9_999_999
    assert grant.model_limits["big"].output_tokens_per_minute == 4_000
    assert app.get_team(ta, world.team)["budgets"]["daily_usd"] == "9.99"

    # Above a bound: refused with the bound named, nothing recorded.
    for change, phrase in (
        ({"limits": {"requests_per_minute": 61}}, "requests per minute 61 is above the org's 60"),
        ({"budgets": {"daily_usd": "10.01"}}, "budget daily usd 10.01 is above the org's 10"),
        ({"model_limits": {"big": {"output_tokens_per_minute": 5_001}}}, "big output tokens per minute"),
    ):
        before = world.events()
        with pytest.raises(PermissionDeniedError) as err:
            app.update_team(ta, world.team, **change)
        assert err.value.code == "above_org_bound" and phrase in err.value.detail
        assert world.events() == before

    # Clearing (inherit the org's value) is allowed; the effective limit is the org's again.
    app.update_team(ta, world.team, limits={}, budgets={}, model_limits={})
    grant = user_grant(app.state, app.state.users[world.member])
    assert grant is not None and grant.limits.requests_per_minute == 60 and "small" not in grant.model_limits


def test_a_value_an_org_admin_set_above_the_org_stays_when_a_team_admin_changes_another(tmp_path):
    world = make_world(make_app(tmp_path))
    app = world.app
    app.update_team(world.p(world.org_admin), world.team, limits={"requests_per_minute": 600})
    # The UI sends every field: the untouched 600 is not a Team-Admin raising it.
    app.update_team(
        world.p(world.team_admin),
        world.team,
        limits={"requests_per_minute": 600, "output_tokens_per_minute": 100},
    )
    assert app.state.teams[world.team].limits == {"requests_per_minute": 600, "output_tokens_per_minute": 100}
    with pytest.raises(PermissionDeniedError):
        app.update_team(world.p(world.team_admin), world.team, limits={"requests_per_minute": 601})
