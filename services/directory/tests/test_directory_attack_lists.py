"""Attacks on the audit index and the kept list projections over HTTP: no role but Admin reads the audit
log, no one reads another org's teams, bad cursors are 4xx, the kept lists never lag a change, and the index
answers what a fold of every stored event answers (also after a replay)."""

from __future__ import annotations

import asyncio

from test_directory_http import bearer, stack  # noqa: F401 - the fixture

from aqueduct_directory.application.audit import audit_events
from aqueduct_directory.domain.policy import SYSTEM


async def _people(service, signer, http):
    admin_user = service.directory.sign_in("local:admin", "", "admin", [], admin=True)
    admin = bearer(signer.session(admin_user))
    org = (await http.get("/api/orgs", headers=admin)).json()[0]
    other = (await http.post("/api/orgs", json={"name": "elsewhere"}, headers=admin)).json()

    async def user(org_id: str, email: str, **roles) -> dict:
        made = await http.post(
            "/api/users", json={"org_id": org_id, "email": email, "name": email, **roles}, headers=admin
        )
        assert made.status_code == 201, made.text
        return made.json()

    async def team(org_id: str, name: str) -> dict:
        made = await http.post("/api/teams", json={"org_id": org_id, "name": name}, headers=admin)
        assert made.status_code == 201, made.text
        return made.json()

    olga = await user(org["id"], "olga@uni.test", org_admin=True)
    tom = await user(org["id"], "tom@uni.test")
    uma = await user(org["id"], "uma@uni.test")
    mine = await team(org["id"], "quantum group")
    theirs = await team(other["id"], "secret lab")
    for member, lead in ((tom, True), (uma, False)):
        added = await http.post(
            f"/api/teams/{mine['id']}/members",
            json={"user_id": member["id"], "team_admin": lead},
            headers=admin,
        )
        assert added.status_code == 200, added.text

    def session(u: dict) -> dict[str, str]:
        return bearer(signer.session({"user_id": u["id"], "name": u["name"]}))

    return (
        admin,
        org,
        other,
        mine,
        theirs,
        {"olga": session(olga), "tom": session(tom), "uma": session(uma)},
        uma,
    )


async def test_no_one_but_an_admin_reads_the_audit_log_or_another_orgs_teams(stack):  # noqa: F811
    service, signer, http = stack
    _admin, org, other, _mine, theirs, sessions, _ = await _people(service, signer, http)
    for who, headers in sessions.items():
        for params in ({}, {"aggregate_id": theirs["id"]}, {"before_id": 10**6}, {"after_id": 0}):
            refused = await http.get("/api/audit/events", params=params, headers=headers)
            assert refused.status_code == 403, (who, params, refused.text)
        for params in ({"brief": "true"}, {"brief": "true", "org_id": other["id"]}, {"org_id": other["id"]}):
            listed = await http.get("/api/teams", params=params, headers=headers)
            assert listed.status_code == 200, (who, listed.text)
            assert {t["org_id"] for t in listed.json()} <= {org["id"]}, (who, params, listed.json())
            assert theirs["id"] not in {t["id"] for t in listed.json()}
            assert "secret" not in listed.text
        searched = await http.get("/api/teams", params={"q": "secret", "brief": "true"}, headers=headers)
        assert searched.json() == [] and searched.headers["x-total-count"] == "0", who
        assert (await http.get(f"/api/teams/{theirs['id']}", headers=headers)).status_code in (403, 404)


async def test_bad_cursors_and_pages_are_4xx_and_huge_ones_answer_nothing_amiss(stack):  # noqa: F811
    service, signer, http = stack
    admin, *_ = await _people(service, signer, http)
    for name in ("before_id", "after_id", "offset", "limit"):
        for value in ("-1", "abc", "1.5", "", "1e3", "0x10", "9" * 400):
            answer = await http.get("/api/audit/events", params={name: value}, headers=admin)
            assert answer.status_code < 500, (name, value, answer.status_code, answer.text)
            if value in ("-1", "abc", "1.5", "0x10"):
                assert answer.status_code == 422, (name, value, answer.text)
    assert (await http.get("/api/audit/events", params={"before_id": "0"}, headers=admin)).status_code == 422
    for name in ("before_id", "after_id"):
        huge = await http.get("/api/audit/events", params={name: str(2**63), "limit": 5}, headers=admin)
        assert huge.status_code == 200, huge.text
        expected = 5 if name == "before_id" else 0
        assert len(huge.json()) == expected
    unknown = await http.get(
        "/api/audit/events", params={"aggregate_id": "no-such", "before_id": 3}, headers=admin
    )
    assert unknown.status_code == 200 and unknown.json() == []


async def test_kept_lists_show_a_change_at_once(stack):  # noqa: F811
    service, signer, http = stack
    admin, _org, _other, mine, _theirs, sessions, uma = await _people(service, signer, http)

    async def teams(headers, **params) -> list[dict]:
        answer = await http.get("/api/teams", params={"brief": "true", **params}, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def users(headers, **params) -> list[dict]:
        answer = await http.get("/api/users", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    for headers in (admin, sessions["olga"]):
        assert [t["member_count"] for t in await teams(headers, q="quantum")] == [2]
        assert [u["email"] for u in await users(headers, q="uma@")] == ["uma@uni.test"]
    assert (
        await http.patch(f"/api/teams/{mine['id']}", json={"name": "renamed lab"}, headers=admin)
    ).is_success
    assert (await http.delete(f"/api/teams/{mine['id']}/members/{uma['id']}", headers=admin)).is_success
    assert (await http.patch(f"/api/users/{uma['id']}", json={"name": "Ursula"}, headers=admin)).is_success
    for headers in (admin, sessions["olga"]):
        assert await teams(headers, q="quantum") == []
        assert [t["member_count"] for t in await teams(headers, q="renamed")] == [1]
        full = (await http.get("/api/teams", params={"q": "renamed"}, headers=headers)).json()
        assert [m["user_id"] for m in full[0]["members"]] != [uma["id"]] and len(full[0]["members"]) == 1
        assert [u["name"] for u in await users(headers, q="ursula", sort="name")] == ["Ursula"]
    assert (await http.delete(f"/api/users/{uma['id']}", headers=admin)).status_code == 204
    assert (await http.delete(f"/api/teams/{mine['id']}", headers=admin)).status_code == 204
    for headers in (admin, sessions["olga"]):
        assert await teams(headers, q="renamed") == []
        assert await users(headers, q="ursula") == []
    deactivated = await users(sessions["olga"], q="ursula", include_deactivated="true")
    assert [u["id"] for u in deactivated] == [uma["id"]]


def _folded(app) -> list[int]:
    return [notification_id for notification_id, _ in app.iter_events()]


async def test_the_index_answers_what_a_fold_answers_after_concurrent_writes_and_a_replay(stack):  # noqa: F811
    service, signer, http = stack
    admin, org, *_ = await _people(service, signer, http)

    async def write(n: int) -> None:
        await http.post(
            "/api/users",
            json={"org_id": org["id"], "email": f"c{n}@uni.test", "name": f"c{n}"},
            headers=admin,
        )

    async def read() -> None:
        for _ in range(20):
            answer = await http.get(
                "/api/audit/events", params={"limit": 500, "type": "Created"}, headers=admin
            )
            assert answer.status_code == 200, answer.text
            await asyncio.sleep(0)

    await asyncio.gather(*(write(n) for n in range(40)), read(), read())
    app = service.directory
    every = _folded(app)
    found, total = audit_events(app, SYSTEM, limit=10**6, newest_first=False)
    assert total == len(every) and [e["notification_id"] for e in found] == every
    app.rebuild_state()
    found, total = audit_events(app, SYSTEM, limit=10**6, newest_first=False)
    assert total == len(every) and [e["notification_id"] for e in found] == every
    page, _ = audit_events(app, SYSTEM, limit=7, newest_first=True, before_id=every[-3])
    assert [e["notification_id"] for e in page] == list(reversed(every[-10:-3]))
