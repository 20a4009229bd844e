"""The directory's HTTP API as the UI and the CLI use it: session tokens, API tokens, problem documents."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from directory_testkit import common_settings, wait_until

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_directory.bootstrap import bootstrap
from aqueduct_directory.domain.grants import model_route
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs import names
from aqueduct_libs.sessions import SESSION_AUDIENCE, SESSION_ISSUER

pytestmark = pytest.mark.nats

CONFIG = """
default_org: default
endpoints:
  - slug: openai
    url: https://api.openai.com/v1
    provider: openai
    api_key: ${OPENAI_API_KEY}
models:
  - name: gpt-4o-mini
    endpoint: openai
    upstream_model: gpt-4o-mini
    input_price_per_million: 0.15
    output_price_per_million: 0.60
orgs:
  - name: default
    sso_group: staff
    limits: {requests_per_minute: 60, input_tokens_per_minute: 100000, output_tokens_per_minute: 20000}
    budgets: {daily_usd: 10, monthly_usd: 200}
    excluded_models: []
    teams:
      - name: research
        description: Research group
        limits: {requests_per_minute: 120}
mcp_servers:
  - name: search
    url: http://tools:9000/mcp
    api_key: ${SEARCH_KEY}
    teams: [default/research]
terms:
  version: "2026-01"
  url: https://example.test/terms/2026-01
"""


class Signer:
    """Signs session tokens the way the auth service does, with a key published as JWKS in KV."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}

    def session(self, user: dict, lifetime: int = 600) -> str:
        now = int(time.time())
        claims = {"sub": user["user_id"], "sid": "s1", "iss": SESSION_ISSUER, "aud": SESSION_AUDIENCE}
        claims |= {"iat": now, "exp": now + lifetime, "name": user.get("name", "")}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k1"})


@pytest.fixture
async def stack(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    config = tmp_path / "aqueduct.yaml"
    config.write_text(CONFIG)
    service = await bootstrap(
        DirectorySettings(common=common_settings(server.url, tmp_path / "data", config))
    )
    await service.start()
    signer = Signer()
    kv = await service.nc.jetstream().key_value(names.AUTH_KEYS_BUCKET)
    await kv.put("jwks", json.dumps(signer.jwks).encode())
    await wait_until(lambda: service.ready() and service.verifier.ready)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://directory") as http:
        yield service, signer, http
    await service.stop()
    server.stop()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def test_session_and_api_token_authentication(stack):
    service, signer, http = stack
    assert (await http.get("/api/me")).status_code == 401
    bad = await http.get("/api/me", headers=bearer("not-a-jwt"))
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    alice = service.directory.sign_in("local:alice", "alice@example.test", "Alice")
    expired = await http.get("/api/me", headers=bearer(signer.session(alice, lifetime=-10)))
    assert expired.status_code == 401
    me = (await http.get("/api/me", headers=bearer(signer.session(alice)))).json()
    assert me["id"] == alice["user_id"] and me["roles"] == ["User"]
    assert me["max_tokens_per_user"] == 10 and me["tos_accepted"] is False  # the config published terms
    accepted = await http.post(
        "/api/me/terms", json={"version": "2026-01"}, headers=bearer(signer.session(alice))
    )
    assert accepted.status_code == 200 and accepted.json()["tos_accepted_version"] == "2026-01"
    assert (await http.get("/api/me", headers=bearer(signer.session(alice)))).json()["tos_accepted"] is True
    created = await http.post("/api/tokens", json={"name": "cli"}, headers=bearer(signer.session(alice)))
    assert created.status_code == 201
    value = created.json()["value"]
    assert (await http.get("/api/me", headers=bearer(value))).json()["id"] == alice["user_id"]
    listed = (await http.get("/api/tokens", headers=bearer(value))).json()
    assert [t["id"] for t in listed] == [created.json()["token"]["id"]] and "value" not in listed[0]
    deleted = await http.delete(f"/api/tokens/{listed[0]['id']}", headers=bearer(value))
    assert deleted.status_code == 204
    assert (await http.get("/api/me", headers=bearer(value))).status_code == 401


async def test_an_api_token_administers_only_with_management_access(stack):
    """A leaked inference token of an Admin cannot administer: without management access an API token
    acts as a plain User on this API. A token with it acts with the owner's roles, and only a signed-in
    user (a session, not an API token) may create one."""
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:root", "", "root", [], admin=True)))
    plain = await http.post("/api/tokens", json={"name": "notebook"}, headers=admin)
    powerful = await http.post("/api/tokens", json={"name": "automation", "management": True}, headers=admin)
    assert plain.status_code == powerful.status_code == 201
    assert plain.json()["token"]["management"] is False and powerful.json()["token"]["management"] is True
    inference, management = bearer(plain.json()["value"]), bearer(powerful.json()["value"])

    assert (await http.get("/api/audit/events", headers=admin)).status_code == 200
    refused = await http.get("/api/audit/events", headers=inference)
    assert refused.status_code == 403
    assert (await http.get("/api/audit/events", headers=management)).status_code == 200
    created = await http.post("/api/orgs", json={"name": "from-a-notebook"}, headers=inference)
    assert created.status_code == 403
    acting = (await http.get("/api/me", headers=inference)).json()["acting"]
    assert acting == {
        "admin": False,
        "org_admin": False,
        "team_ids": [],
        "team_admin_ids": [],
        "api_token": True,
    }
    assert (await http.get("/api/me", headers=management)).json()["acting"]["admin"] is True
    assert (await http.get("/api/me", headers=admin)).json()["acting"]["api_token"] is False
    # Own tokens stay manageable with any of them.
    assert len((await http.get("/api/tokens", headers=inference)).json()) == 2

    # Minting a management token takes a session: neither API token may.
    for credential in (inference, management):
        minted = await http.post("/api/tokens", json={"name": "x", "management": True}, headers=credential)
        assert minted.status_code == 403, minted.text
    assert len((await http.get("/api/tokens", headers=admin)).json()) == 2


async def test_config_applied_at_start_and_by_api_idempotently(stack):
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:admin", "", "admin", [], admin=True)))
    models = (await http.get("/api/models", headers=admin)).json()
    assert models == [
        {
            "name": "gpt-4o-mini",
            "endpoint": "openai",
            "upstream_model": "gpt-4o-mini",
            "input_price_per_million": "0.15",
            "output_price_per_million": "0.6",
            "fallbacks": [],
            "aliases": [],
            "cached_input_price_per_million": None,
            "cache_write_price_per_million": None,
            "cache_write_1h_price_per_million": None,
            "reasoning_price_per_million": None,
            "available": True,
            "unavailable_reason": None,
        }
    ]
    assert (await http.get("/api/endpoints", headers=admin)).json()[0]["api_key_env"] == "OPENAI_API_KEY"
    (search,) = (await http.get("/api/mcp-servers", headers=admin)).json()
    assert search["api_key_env"] == "SEARCH_KEY" and len(search["allowed_team_ids"]) == 1
    assert (await http.get("/api/terms", headers=admin)).json()["version"] == "2026-01"
    again = await http.post("/api/config/apply", content=CONFIG, headers=admin)
    assert again.json() == {"dry_run": False, "changes": []}
    changed = CONFIG.replace("requests_per_minute: 120", "requests_per_minute: 30").replace(
        "mcp_servers:", "  - name: lab\n    teams:\n      - name: bench\nmcp_servers:"
    )
    events_before = service.directory.recorder.max_notification_id()
    dry = (await http.post("/api/config/apply?dry_run=true", content=changed, headers=admin)).json()
    assert dry["changes"] == [
        "update team default/research: limits",
        "create org lab",
        "create team lab/bench",
    ]
    assert service.directory.recorder.max_notification_id() == events_before  # a dry run records nothing
    applied = (await http.post("/api/config/apply", content=changed, headers=admin)).json()
    assert applied["changes"] == dry["changes"]
    research = [t for t in (await http.get("/api/teams", headers=admin)).json() if t["name"] == "research"]
    assert research[0]["limits"] == {"requests_per_minute": 30}
    secret = CONFIG.replace("${OPENAI_API_KEY}", "sk-literal-secret")
    refused = await http.post("/api/config/apply", content=secret, headers=admin)
    assert refused.status_code == 422 and "never stored" in refused.json()["detail"]
    member = bearer(signer.session(service.directory.sign_in("local:bob", "bob@x.test", "Bob")))
    assert (await http.post("/api/config/apply", content=CONFIG, headers=member)).status_code == 403


async def test_problem_documents_for_denied_conflicting_and_bad_requests(stack):
    service, signer, http = stack
    bob = bearer(signer.session(service.directory.sign_in("local:bob", "bob@x.test", "Bob")))
    denied = await http.post("/api/orgs", json={"name": "mine"}, headers=bob)
    assert denied.status_code == 403 and denied.json()["code"] == "permission_denied"
    missing = await http.get("/api/teams/does-not-exist", headers=bob)
    assert missing.status_code == 404 and missing.json()["code"] == "team_not_found"
    bad = await http.post("/api/tokens", json={"nom": "x"}, headers=bob)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"
    assert bad.json()["field"] == "name" and "name: Field required" in bad.json()["detail"]
    for i in range(10):
        assert (await http.post("/api/tokens", json={"name": f"t{i}"}, headers=bob)).status_code == 201
    capped = await http.post("/api/tokens", json={"name": "eleven"}, headers=bob)
    assert capped.status_code == 409 and capped.json()["code"] == "token_cap_reached"
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await http.delete(
        f"/api/tokens/{(await http.get('/api/tokens', headers=bob)).json()[0]['id']}", headers=bob
    )
    expired = await http.post("/api/tokens", json={"name": "x", "expires_at": past}, headers=bob)
    assert expired.status_code == 422 and "future" in expired.json()["detail"]
    naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()  # taken as UTC
    dated = await http.post("/api/tokens", json={"name": "dated", "expires_at": naive}, headers=bob)
    assert dated.status_code == 201 and dated.json()["token"]["expires_at"].endswith("+00:00")


async def test_team_admin_flow_service_accounts_and_members(stack):
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:admin", "", "admin", [], admin=True)))
    org = (await http.get("/api/orgs", headers=admin)).json()[0]
    lead = (
        await http.post("/api/users", json={"email": "lead@x.test", "org_id": org["id"]}, headers=admin)
    ).json()
    dev = (
        await http.post("/api/users", json={"email": "dev@x.test", "org_id": org["id"]}, headers=admin)
    ).json()
    team = (await http.post("/api/teams", json={"org_id": org["id"], "name": "ml"}, headers=admin)).json()
    await http.post(
        f"/api/teams/{team['id']}/members", json={"user_id": lead["id"], "team_admin": True}, headers=admin
    )
    await http.post(f"/api/teams/{team['id']}/members", json={"user_id": dev["id"]}, headers=admin)
    lead_session = bearer(
        signer.session(service.directory.sign_in("oidc:idp:lead", "lead@x.test", "Lead", email_verified=True))
    )
    made = await http.post(
        f"/api/teams/{team['id']}/service-accounts",
        json={"name": "bot", "description": "ci"},
        headers=lead_session,
    )
    assert made.status_code == 201 and made.json()["value"].startswith("aq-")
    sa = made.json()["service_account"]
    blocked = await http.delete(f"/api/teams/{team['id']}/members/{lead['id']}", headers=lead_session)
    assert blocked.status_code == 409 and blocked.json()["code"] == "owns_service_account"
    moved = await http.patch(
        f"/api/service-accounts/{sa['id']}", json={"owner_user_id": dev["id"]}, headers=lead_session
    )
    assert moved.json()["owner_user_id"] == dev["id"]
    removed = await http.delete(f"/api/teams/{team['id']}/members/{lead['id']}", headers=lead_session)
    assert removed.status_code == 204
    # The service-account token cannot act as a user on the management API.
    assert (await http.get("/api/me", headers=bearer(made.json()["value"]))).status_code == 401


async def test_a_team_admin_patches_limits_up_to_the_orgs_over_http(stack):
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:admin", "", "admin", [], admin=True)))
    org = (await http.get("/api/orgs", headers=admin)).json()[0]  # 60 requests/min, $10 a day
    lead = (
        await http.post("/api/users", json={"email": "lead@x.test", "org_id": org["id"]}, headers=admin)
    ).json()
    research = next(
        t for t in (await http.get("/api/teams", headers=admin)).json() if t["name"] == "research"
    )
    await http.post(
        f"/api/teams/{research['id']}/members",
        json={"user_id": lead["id"], "team_admin": True},
        headers=admin,
    )
    lead_session = bearer(
        signer.session(service.directory.sign_in("oidc:idp:lead", "lead@x.test", "Lead", email_verified=True))
    )
    path = f"/api/teams/{research['id']}"
    ok = await http.patch(path, json={"limits": {"requests_per_minute": 50}, "budgets": {"daily_usd": "9.5"}},
                          headers=lead_session)  # fmt: skip
    assert ok.status_code == 200 and ok.json()["limits"] == {"requests_per_minute": 50}
    above = await http.patch(path, json={"budgets": {"daily_usd": "11"}}, headers=lead_session)
    assert above.status_code == 403 and above.json()["code"] == "above_org_bound"
    assert "daily usd 11 is above the org's 10" in above.json()["detail"]
    renamed = await http.patch(path, json={"name": "mine"}, headers=lead_session)
    assert renamed.status_code == 403 and "Org-Admin" in renamed.json()["detail"]
    assert (await http.get(path, headers=admin)).json()["budgets"] == {"daily_usd": "9.5"}


async def test_a_models_price_is_cleared_by_an_explicit_null_and_left_when_absent(stack):
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:admin", "", "admin", [], admin=True)))
    path = "/api/models/gpt-4o-mini"
    kept = (await http.patch(path, json={"upstream_model": "gpt-4o-mini-2"}, headers=admin)).json()
    assert (kept["input_price_per_million"], kept["output_price_per_million"]) == ("0.15", "0.6")
    cleared = (await http.patch(path, json={"input_price_per_million": None}, headers=admin)).json()
    assert cleared["input_price_per_million"] is None and cleared["output_price_per_million"] == "0.6"
    route = model_route(service.directory.state.models["gpt-4o-mini"])  # what the snapshot gets
    assert route.input_price_nanos_per_token is None and route.output_price_nanos_per_token == 600
    # The config file gives the price again: applying it sets it back; a file without prices leaves them.
    assert (await http.post("/api/config/apply", content=CONFIG, headers=admin)).json()["changes"] == [
        "update model gpt-4o-mini"
    ]
    without = CONFIG.replace("    input_price_per_million: 0.15\n", "")
    assert (await http.post("/api/config/apply", content=without, headers=admin)).json()["changes"] == []
    member = bearer(signer.session(service.directory.sign_in("local:bob", "bob@x.test", "Bob")))
    refused = await http.patch(path, json={"output_price_per_million": None}, headers=member)
    assert refused.status_code == 403
    assert (await http.get("/api/models", headers=admin)).json()[0]["output_price_per_million"] == "0.6"


async def test_org_admins_list_a_users_tokens_and_others_may_not(stack):
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:admin", "", "admin", [], admin=True)))
    bob_id = service.directory.sign_in("local:bob", "bob@x.test", "Bob")
    bob = bearer(signer.session(bob_id))
    made = (await http.post("/api/tokens", json={"name": "laptop"}, headers=bob)).json()["token"]
    listed = (await http.get("/api/tokens", params={"user_id": bob_id["user_id"]}, headers=admin)).json()
    assert [t["id"] for t in listed] == [made["id"]]
    carol = bearer(signer.session(service.directory.sign_in("local:carol", "carol@x.test", "Carol")))
    denied = await http.get("/api/tokens", params={"user_id": bob_id["user_id"]}, headers=carol)
    assert denied.status_code == 403
    limited = await http.patch(f"/api/tokens/{made['id']}", json={"limits": {"requests_per_minute": 5}},
                               headers=admin)  # fmt: skip
    assert limited.json()["limits"] == {"requests_per_minute": 5}


async def test_audit_and_replay_endpoints(stack):
    service, signer, http = stack
    admin_user = service.directory.sign_in("local:admin", "", "admin", [], admin=True)
    admin = bearer(signer.session(admin_user))
    org = (await http.get("/api/orgs", headers=admin)).json()[0]
    before = datetime.now(UTC)
    await http.patch(f"/api/orgs/{org['id']}", json={"limits": {"requests_per_minute": 1}}, headers=admin)
    mine = (
        await http.get("/api/audit/events", params={"actor": admin_user["user_id"]}, headers=admin)
    ).json()
    assert [e["type"] for e in mine] == ["OrgLimitsSet"]
    past = (
        await http.get(
            "/api/audit/at", params={"time": before.isoformat(), "aggregate_id": org["id"]}, headers=admin
        )
    ).json()
    assert past["state"]["limits"]["requests_per_minute"] == 60
    now = (
        await http.get(
            "/api/audit/at",
            params={"time": datetime.now(UTC).isoformat(), "aggregate_id": org["id"]},
            headers=admin,
        )
    ).json()
    assert now["state"]["limits"]["requests_per_minute"] == 1
    replayed = (await http.post("/api/admin/replay", headers=admin)).json()
    assert replayed["events"] == service.directory.recorder.max_notification_id()
    member = bearer(signer.session(service.directory.sign_in("local:bob", "bob@x.test", "Bob")))
    assert (await http.get("/api/audit/events", headers=member)).status_code == 403
    assert (await http.post("/api/admin/replay", headers=member)).status_code == 403


async def test_operational_routes(stack):
    _, _, http = stack
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).status_code == 200
    assert "/api/tokens" in (await http.get("/openapi.json")).json()["paths"]
    metrics = (await http.get("/metrics")).text
    assert (
        "aqueduct_directory_relay_position" in metrics
        and "aqueduct_directory_snapshot_writes_total" in metrics
    )


async def test_a_price_beyond_the_usage_bounds_is_refused(stack):
    """A price accounting could not apply without overflowing a cost (aqueduct_libs.bounds) is a 4xx
    problem that changes nothing."""
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:admin", "", "admin", [], admin=True)))
    path = "/api/models/gpt-4o-mini"
    refused = await http.patch(path, json={"input_price_per_million": "10000.01"}, headers=admin)
    assert refused.status_code == 422 and "at most 10,000" in refused.json()["detail"]
    assert refused.json()["field"] == "input_price_per_million"
    assert (await http.get("/api/models", headers=admin)).json()[0]["input_price_per_million"] == "0.15"
    at_bound = await http.patch(path, json={"output_price_per_million": "10000"}, headers=admin)
    assert at_bound.status_code == 200


async def test_lists_search_sort_and_page_with_a_total(stack):
    service, signer, http = stack
    admin = bearer(signer.session(service.directory.sign_in("local:admin", "", "admin", [], admin=True)))
    org = (await http.get("/api/orgs", headers=admin)).json()[0]
    for n in range(12):
        created = await http.post(
            "/api/users",
            json={"org_id": org["id"], "email": f"person{n:02}@uni.test", "name": f"Person {n:02}"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
    page = await http.get("/api/users", params={"q": "PERSON", "sort": "email", "limit": 5}, headers=admin)
    assert page.status_code == 200 and page.headers["x-total-count"] == "12"
    assert [u["email"] for u in page.json()] == [f"person{n:02}@uni.test" for n in range(5)]
    last = await http.get(
        "/api/users",
        params={"q": "person", "sort": "email", "order": "desc", "limit": 5, "offset": 10},
        headers=admin,
    )
    assert [u["email"] for u in last.json()] == ["person01@uni.test", "person00@uni.test"]
    one = await http.get("/api/users", params={"q": "person 07"}, headers=admin)
    assert [u["name"] for u in one.json()] == ["Person 07"]
    # Refused like every bad query parameter, naming it.
    bad = await http.get("/api/users", params={"sort": "password"}, headers=admin)
    too_small = await http.get("/api/users", params={"limit": 0}, headers=admin)
    assert (
        bad.status_code == too_small.status_code >= 400 and "sort" in bad.text and "limit" in too_small.text
    )

    # Deactivated and back, over HTTP; the audit log shows it first when read newest first.
    person = page.json()[0]["id"]
    assert (await http.delete(f"/api/users/{person}", headers=admin)).status_code == 204
    hidden = await http.get("/api/users", params={"q": "person00"}, headers=admin)
    assert hidden.json() == []
    shown = await http.get(
        "/api/users", params={"q": "person00", "include_deactivated": "true"}, headers=admin
    )
    assert [u["deleted"] for u in shown.json()] == [True]
    back = await http.post(f"/api/users/{person}/reactivate", headers=admin)
    assert back.status_code == 200 and back.json()["deleted"] is False
    log = await http.get("/api/audit/events", params={"order": "desc", "limit": 2}, headers=admin)
    assert [e["type"] for e in log.json()] == ["UserReactivated", "UserDeactivated"]
    assert int(log.headers["x-total-count"]) > 12
