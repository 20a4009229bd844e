"""The admin's daily work on the directory: roles, deactivation and back, finding people, the audit log."""

from __future__ import annotations

import pytest
from directory_testkit import make_app, make_world

from aqueduct_directory.adapters.projection import compute_snapshot
from aqueduct_directory.application.audit import audit_events
from aqueduct_directory.domain.errors import ConflictError, PermissionDeniedError
from aqueduct_directory.domain.grants import token_grant
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_libs import names


@pytest.fixture
def world():
    return make_world(make_app(None))


def test_a_team_admin_is_demoted_and_stays_a_member(world):
    app = world.app
    team = app.demote_member(world.p(world.org_admin), world.team, world.team_admin)
    member = next(m for m in team["members"] if m["user_id"] == world.team_admin)
    assert member["team_admin"] is False and member["name"] == "Team Admin"
    assert "Team-Admin" not in app.get_user(SYSTEM, world.team_admin)["roles"]
    with pytest.raises(ConflictError):
        app.demote_member(SYSTEM, world.team, world.team_admin)
    # A plain member cannot demote anyone.
    app.promote_member(SYSTEM, world.team, world.team_admin)
    with pytest.raises(PermissionDeniedError):
        app.demote_member(world.p(world.member), world.team, world.team_admin)


def test_org_admin_and_admin_are_granted_and_revoked(world):
    app = world.app
    assert "Org-Admin" in app.update_user(world.p(world.admin), world.member, org_admin=True)["roles"]
    assert "Admin" in app.update_user(world.p(world.admin), world.member, admin=True)["roles"]
    roles = app.update_user(world.p(world.admin), world.member, admin=False, org_admin=False)["roles"]
    assert roles == ["User"]
    with pytest.raises(PermissionDeniedError):
        app.update_user(world.p(world.org_admin), world.member, admin=True)


def test_a_deactivated_user_is_refused_then_reactivated_with_the_same_tokens(world):
    app = world.app
    issued = app.issue_token(world.p(world.member), "laptop", None)
    token_hash = app.state.tokens[issued["token"]["id"]].token_hash
    key = names.snapshot_token_key(token_hash)
    assert key in compute_snapshot(app.state)

    app.deactivate_user(world.p(world.org_admin), world.member)
    assert key not in compute_snapshot(app.state)
    assert token_grant(app.state, app.state.tokens[issued["token"]["id"]]) is None
    listed = {u["id"]: u for u in app.list_users(world.p(world.org_admin), include_deactivated=True)}
    assert listed[world.member]["deleted"] is True
    assert world.member not in {u["id"] for u in app.list_users(world.p(world.org_admin))}
    # Their Org-Admins still find them (to reactivate them); nobody else does.
    assert app.get_user(world.p(world.org_admin), world.member)["deleted"] is True
    assert app.list_tokens(world.p(world.org_admin), world.member)[0]["name"] == "laptop"
    from aqueduct_directory.domain.errors import NotFoundError

    with pytest.raises(NotFoundError):
        app.get_user(world.p(world.team_admin), world.member)
    # A plain member cannot see, let alone reactivate, anyone.
    with pytest.raises(PermissionDeniedError):
        app.reactivate_user(world.p(world.team_admin), world.member)

    app.reactivate_user(world.p(world.org_admin), world.member)
    assert key in compute_snapshot(app.state)
    with pytest.raises(ConflictError):
        app.reactivate_user(world.p(world.org_admin), world.member)
    types = [e["type"] for e in audit_events(app, SYSTEM, aggregate_id=world.member)[0]]
    assert types[-2:] == ["UserDeactivated", "UserReactivated"]


def test_models_listed_are_the_models_the_proxy_allows(world):
    app = world.app
    app.register_endpoint(SYSTEM, "local", "http://127.0.0.1:9/v1")
    for name in ("chat-a", "chat-b", "chat-c", "chat-d"):
        app.register_model(SYSTEM, name, "local")
    app.update_org(SYSTEM, world.org, excluded_models=["chat-a"])
    app.update_team(SYSTEM, world.team, excluded_models=["chat-b"])
    app.update_user(SYSTEM, world.member, excluded_models=["chat-c"])

    member = world.p(world.member)
    assert [m["name"] for m in app.list_models(member)] == ["chat-d"]
    issued = app.issue_token(member, "laptop", None)
    grant = token_grant(app.state, app.state.tokens[issued["token"]["id"]])
    assert grant is not None and grant.allowed_models == ["chat-d"]

    reasons = {m["name"]: m["unavailable_reason"] for m in app.list_models(member, include_unavailable=True)}
    assert reasons == {
        "chat-a": "excluded by your organisation",
        "chat-b": "excluded by your team",
        "chat-c": "excluded for your account",
        "chat-d": None,
    }
    # The outsider's org excludes nothing.
    assert len(app.list_models(world.p(world.outsider))) == 4


def test_audit_log_newest_first_with_pages_and_filters(world):
    app = world.app
    everything, total = audit_events(app, SYSTEM, limit=100_000)
    newest, same_total = audit_events(app, SYSTEM, newest_first=True, limit=3)
    assert total == same_total == len(everything) > 10
    assert [e["notification_id"] for e in newest] == [e["notification_id"] for e in everything[::-1][:3]]
    second_page, _ = audit_events(app, SYSTEM, newest_first=True, limit=3, offset=3)
    assert second_page[0]["notification_id"] == newest[-1]["notification_id"] - 1
    users, count = audit_events(app, SYSTEM, event_type="UserRegistered")
    assert count == 5 and {e["aggregate_type"] for e in users} == {"User"}
    teams, _ = audit_events(app, SYSTEM, aggregate_type="Team")
    assert teams and all(e["aggregate_type"] == "Team" for e in teams)


def test_an_expired_token_is_regenerated_only_with_a_new_expiry_and_an_expiry_is_edited():
    from datetime import timedelta

    from directory_testkit import Clock

    from aqueduct_directory.domain.errors import InvalidInputError

    clock = Clock()
    app = make_app(None, clock)
    world = make_world(app)
    member = world.p(world.member)
    token_id = app.issue_token(member, "laptop", clock.now + timedelta(days=1))["token"]["id"]
    clock.advance(days=2)
    with pytest.raises(InvalidInputError) as refused:
        app.regenerate_token(member, token_id)
    assert refused.value.code == "token_expired"
    with pytest.raises(InvalidInputError):
        app.regenerate_token(member, token_id, clock.now - timedelta(minutes=1))
    renewed = app.regenerate_token(member, token_id, clock.now + timedelta(days=30))
    assert renewed["value"] and app.state.tokens[token_id].is_live(clock.now)

    assert app.change_token_expiry(member, token_id, None)["expires_at"] is None
    assert app.state.tokens[token_id].is_live(clock.now + timedelta(days=3650))
    with pytest.raises(PermissionDeniedError):
        app.change_token_expiry(world.p(world.team_admin), token_id, clock.now + timedelta(days=1))
    types = [e["type"] for e in audit_events(app, SYSTEM, aggregate_id=token_id)[0]]
    assert types == ["TokenIssued", "TokenExpiryChanged", "TokenRegenerated", "TokenExpiryChanged"]


def test_audit_events_name_people_and_show_each_change_before_and_after(world):
    app = world.app
    app.update_team(SYSTEM, world.team, limits={"requests_per_minute": 30})
    app.update_team(world.p(world.org_admin), world.team, limits={"requests_per_minute": 45})
    events, _ = audit_events(
        app, SYSTEM, aggregate_id=world.team, newest_first=True, limit=1, with_changes=True
    )
    (event,) = events
    assert event["type"] == "TeamLimitsSet" and event["actor_name"] == "Org Admin"
    assert event["aggregate_name"] == "research"
    assert event["changes"] == [
        {
            "field": "limits",
            "before": {"requests_per_minute": 30},
            "after": {"requests_per_minute": 45},
        }
    ]
    created, _ = audit_events(app, SYSTEM, aggregate_id=world.team, limit=1, with_changes=True)
    assert {c["field"] for c in created[0]["changes"]} >= {"name", "description", "org_id"}
    assert all(c["before"] is None for c in created[0]["changes"])
