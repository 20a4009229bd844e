"""Audit questions answered by folding events up to a moment: who could call model X at time T, how fast."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from directory_testkit import make_app, make_world

from aqueduct_directory.application.audit import audit_events, model_access_at, state_at
from aqueduct_directory.domain.policy import SYSTEM


def moment() -> datetime:
    time.sleep(0.002)  # event timestamps have microsecond resolution; keep the marks apart
    now = datetime.now(UTC)
    time.sleep(0.002)
    return now


def test_which_tokens_could_call_a_model_at_a_past_moment(tmp_path):
    world = make_world(make_app(tmp_path))
    app, admin = world.app, SYSTEM
    app.register_endpoint(admin, "openai", "http://upstream/v1")
    app.register_model(admin, "gpt-4o", "openai")
    app.register_model(admin, "mini", "openai")
    bob = app.create_user(admin, world.org, "bob@acme.test", "Bob")["id"]
    app.add_member(admin, world.other_team, bob)
    t_member = app.issue_token(world.p(world.member), "member's")["token"]["id"]
    expires = datetime.now(UTC) + timedelta(days=1)
    t_bob = app.issue_token(world.p(bob), "bob's", expires_at=expires)["token"]["id"]
    first = moment()

    app.update_org(admin, world.org, model_limits={"gpt-4o": {"requests_per_minute": 5}})
    app.update_team(admin, world.other_team, excluded_models=["gpt-4o"])
    app.update_user(admin, world.member, limits={"requests_per_minute": 2})
    second = moment()

    app.revoke_token(world.p(world.member), t_member)
    t_admin = app.issue_token(world.p(world.team_admin), "lead's")["token"]["id"]
    third = moment()

    def access(model: str, at: datetime) -> dict[str, dict]:
        return {a["token_id"]: a for a in model_access_at(app, admin, model, at)}

    at_first = access("gpt-4o", first)
    assert set(at_first) == {t_member, t_bob}
    assert (
        at_first[t_member]["limits"]["requests_per_minute"] == 60
        and at_first[t_member]["model_limits"] is None
    )

    at_second = access("gpt-4o", second)
    assert set(at_second) == {t_member}  # Bob's team excluded the model in between
    assert at_second[t_member]["limits"]["requests_per_minute"] == 2
    assert at_second[t_member]["model_limits"]["requests_per_minute"] == 5
    assert set(access("mini", second)) == {t_member, t_bob}

    assert set(access("gpt-4o", third)) == {t_admin}
    assert set(access("mini", third)) == {t_bob, t_admin}
    # Expiry counts too: a day later Bob's token could call nothing.
    assert set(access("mini", expires + timedelta(seconds=1))) == {t_admin}
    assert model_access_at(app, admin, "gpt-4o", first - timedelta(days=1)) == []


def test_state_of_a_token_and_the_log_of_who_changed_it(tmp_path):
    world = make_world(make_app(tmp_path))
    app = world.app
    token_id = app.issue_token(world.p(world.member), "laptop")["token"]["id"]
    before = moment()
    app.revoke_token(world.p(world.member), token_id)
    assert state_at(app, SYSTEM, before, token_id)["state"]["revoked"] is False
    assert state_at(app, SYSTEM, datetime.now(UTC), token_id)["state"]["revoked"] is True
    log, _ = audit_events(app, SYSTEM, aggregate_id=token_id)
    assert [(e["type"], e["actor"]) for e in log] == [
        ("TokenIssued", world.member),
        ("TokenRevoked", world.member),
    ]
    assert [e["type"] for e in audit_events(app, SYSTEM, since=before)[0]] == ["TokenRevoked"]
    assert all(e["actor"] == "system" for e in audit_events(app, SYSTEM, until=before)[0][:5])


def _folded_answer(app, newest_first: bool, **wanted) -> list[int]:
    """What the audit log must answer, found the slow way: every stored event decoded and filtered."""
    since, until = wanted.get("since"), wanted.get("until")
    found = [
        notification_id
        for notification_id, e in app.iter_events()
        if (since is None or e.timestamp >= since)
        and (until is None or e.timestamp <= until)
        and wanted.get("aggregate_id") in (None, str(e.originator_id))
        and wanted.get("actor") in (None, getattr(e, "actor", "system"))
        and wanted.get("event_type") in (None, type(e).__name__)
        and wanted.get("aggregate_type") in (None, type(e).__qualname__.split(".")[0])
    ]
    return found[::-1] if newest_first else found


def test_the_audit_index_answers_what_folding_every_event_answers_and_pages_by_cursor(tmp_path):
    world = make_world(make_app(tmp_path))
    app = world.app
    member = world.p(world.member)
    tokens = [app.issue_token(member, f"laptop {i}")["token"]["id"] for i in range(6)]
    middle = moment()
    for token_id in tokens[:3]:
        app.revoke_token(member, token_id)
    app.update_team(world.p(world.org_admin), world.team, limits={"requests_per_minute": 45})
    queries = [
        {},
        {"aggregate_type": "Token"},
        {"actor": world.member},
        {"actor": world.member, "event_type": "TokenRevoked"},
        {"aggregate_id": tokens[0]},
        {"aggregate_type": "Token", "since": middle},
        {"until": middle, "aggregate_type": "Team"},
        {"actor": "nobody-at-all"},
    ]
    for wanted in queries:
        for newest_first in (True, False):
            expected = _folded_answer(app, newest_first, **wanted)
            page, total = audit_events(app, SYSTEM, newest_first=newest_first, limit=4, offset=1, **wanted)
            assert total == len(expected), wanted
            assert [e["notification_id"] for e in page] == expected[1:5], wanted

    # Newest first by cursor: each page starts below the last one shown, and the pages cover the log.
    seen: list[int] = []
    before = None
    while True:
        page, total = audit_events(app, SYSTEM, newest_first=True, limit=5, before_id=before)
        if not page:
            break
        seen += [e["notification_id"] for e in page]
        before = page[-1]["notification_id"]
    assert seen == _folded_answer(app, True) and total == len(seen)
    newer, _ = audit_events(app, SYSTEM, after_id=seen[2], limit=10)
    assert [e["notification_id"] for e in newer] == seen[:2][::-1]

    # Another process writing to the same store: its events are indexed once the store is followed.
    other = make_app(tmp_path)
    other.issue_token(other.principal(world.member), "from elsewhere")
    app.catch_up()
    latest, _ = audit_events(app, SYSTEM, newest_first=True, limit=1)
    assert latest[0]["type"] == "TokenIssued" and latest[0]["data"]["name"] == "from elsewhere"
