"""Every admin input is checked by the server: a bad value is a 422 naming the field, and changes nothing.

The values are the ones an attack on the running product got accepted (a slug "Bad Slug!", URLs
"not a url" and "javascript:alert(1)", "not-an-email", MCP names with spaces, 26-digit limits, a limit of
0, a service account without a description), and their neighbours. The same rules hold for aqueduct.yaml.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from directory_testkit import World, make_app, make_world

from aqueduct_directory.application.config_apply import apply_config, parse_config
from aqueduct_directory.domain.errors import InvalidFieldError
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.entrypoints.http.app import create_http_app
from aqueduct_libs.sessions import SessionVerifier

HUGE = 10**26  # 26 digits


@dataclass
class Api:
    world: World
    admin: httpx.AsyncClient
    team_admin: httpx.AsyncClient
    ids: dict[str, str]


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    app = make_app(tmp_path)
    world = make_world(app)
    app.register_endpoint(SYSTEM, "fake", "http://upstream.test/v1")
    app.register_model(SYSTEM, "fake-model", "fake", input_price_per_million="1")
    app.register_mcp_server(SYSTEM, "search", "http://tools.test/mcp")
    sa = app.create_service_account(world.p(world.team_admin), world.team, "ci-bot", "builds the site")
    token = app.issue_token(world.p(world.member), "laptop")["token"]["id"]
    ids = {"org": world.org, "team": world.team, "user": world.member, "sa": sa["service_account"]["id"]}
    ids["token"] = token
    http_app = create_http_app(app, SessionVerifier(), lambda: True, _no_replay)
    clients = []
    for user in (world.admin, world.team_admin):
        value = app.issue_token(world.p(user), "admin-cli", management=True)["value"]
        clients.append(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(http_app),
                base_url="http://directory.test",
                headers={"Authorization": f"Bearer {value}"},
            )
        )
    yield Api(world, clients[0], clients[1], ids)
    for client in clients:
        await client.aclose()


async def _no_replay() -> dict[str, Any]:
    return {}


def _limits(value: Any) -> dict[str, Any]:
    return {"limits": {"requests_per_minute": value}}


# (method, path, body, the field named in the answer); paths name objects of the fixture by {key}.
BAD: list[tuple[str, str, dict[str, Any], str]] = [
    # endpoints
    ("POST", "/api/endpoints", {"slug": "Bad Slug!", "url": "http://up.test/v1"}, "slug"),
    ("POST", "/api/endpoints", {"slug": "v1", "url": "http://up.test/v1"}, "slug"),
    ("POST", "/api/endpoints", {"slug": "", "url": "http://up.test/v1"}, "slug"),
    ("POST", "/api/endpoints", {"slug": "ok", "url": "not a url"}, "url"),
    ("POST", "/api/endpoints", {"slug": "ok", "url": "javascript:alert(1)"}, "url"),
    ("POST", "/api/endpoints", {"slug": "ok", "url": "ftp://files.test/v1"}, "url"),
    ("POST", "/api/endpoints", {"slug": "ok", "url": "http://"}, "url"),
    ("POST", "/api/endpoints", {"slug": "ok", "url": "http://up.test/v1", "provider": "gopher"}, "provider"),
    (
        "POST",
        "/api/endpoints",
        {"slug": "ok", "url": "http://up.test", "api_key_env": "AQUEDUCT_SECRET_KEY"},
        "api_key_env",
    ),
    ("PATCH", "/api/endpoints/fake", {"url": "javascript:alert(1)"}, "url"),
    # models
    ("POST", "/api/models", {"name": "my model", "endpoint": "fake"}, "name"),
    ("POST", "/api/models", {"name": "m\x00", "endpoint": "fake"}, "name"),
    ("POST", "/api/models", {"name": "m", "endpoint": "fake", "upstream_model": "a b"}, "upstream_model"),
    (
        "POST",
        "/api/models",
        {"name": "m", "endpoint": "fake", "input_price_per_million": "abc"},
        "input_price_per_million",
    ),
    (
        "POST",
        "/api/models",
        {"name": "m", "endpoint": "fake", "input_price_per_million": -1},
        "input_price_per_million",
    ),
    (
        "POST",
        "/api/models",
        {"name": "m", "endpoint": "fake", "output_price_per_million": str(HUGE)},
        "output_price_per_million",
    ),
    (
        "POST",
        "/api/models",
        {"name": "m", "endpoint": "fake", "output_price_per_million": "NaN"},
        "output_price_per_million",
    ),
    ("POST", "/api/models", {"name": "m", "endpoint": "fake", "fallbacks": ["no such model"]}, "fallbacks"),
    ("PATCH", "/api/models/fake-model", {"input_price_per_million": "1e30"}, "input_price_per_million"),
    # MCP servers
    ("POST", "/api/mcp-servers", {"name": "my server", "url": "http://tools.test/mcp"}, "name"),
    ("POST", "/api/mcp-servers", {"name": "a/b", "url": "http://tools.test/mcp"}, "name"),
    ("POST", "/api/mcp-servers", {"name": "tools", "url": "not a url"}, "url"),
    ("POST", "/api/mcp-servers", {"name": "tools", "url": "javascript:alert(1)"}, "url"),
    ("PATCH", "/api/mcp-servers/search", {"url": "file:///etc/passwd"}, "url"),
    # terms of service
    ("POST", "/api/terms", {"version": "2026-02", "url": "javascript:alert(1)"}, "url"),
    ("POST", "/api/terms", {"version": "2026-02", "url": "not a url"}, "url"),
    ("POST", "/api/terms", {"version": "", "url": "https://example.test/terms"}, "version"),
    # users
    ("POST", "/api/users", {"email": "not-an-email", "org_id": "{org}"}, "email"),
    ("POST", "/api/users", {"email": "two words@example.org", "org_id": "{org}"}, "email"),
    ("POST", "/api/users", {"email": "ok@example.org", "name": "x" * 201, "org_id": "{org}"}, "name"),
    ("POST", "/api/users", {"email": "ok@example.org", "name": "bell\x07", "org_id": "{org}"}, "name"),
    ("PATCH", "/api/users/{user}", {"email": "not-an-email"}, "email"),
    ("PATCH", "/api/users/{user}", {"name": "new\nline"}, "name"),
    ("PATCH", "/api/users/{user}", _limits(0), "limits.requests_per_minute"),
    # orgs
    ("POST", "/api/orgs", {"name": ""}, "name"),
    ("POST", "/api/orgs", {"name": "\x1b[31mred"}, "name"),
    ("POST", "/api/orgs", {"name": "lab", **_limits(HUGE)}, "limits.requests_per_minute"),
    ("PATCH", "/api/orgs/{org}", {"sso_group": "staff\x00"}, "sso_group"),
    ("PATCH", "/api/orgs/{org}", _limits(0), "limits.requests_per_minute"),
    ("PATCH", "/api/orgs/{org}", _limits(HUGE), "limits.requests_per_minute"),
    ("PATCH", "/api/orgs/{org}", _limits(-1), "limits.requests_per_minute"),
    ("PATCH", "/api/orgs/{org}", _limits(1.5), "limits.requests_per_minute"),
    ("PATCH", "/api/orgs/{org}", _limits("60"), "limits.requests_per_minute"),
    ("PATCH", "/api/orgs/{org}", {"limits": {"tokens_per_hour": 5}}, "limits.tokens_per_hour"),
    ("PATCH", "/api/orgs/{org}", {"budgets": {"daily_usd": "1e30"}}, "budgets.daily_usd"),
    ("PATCH", "/api/orgs/{org}", {"budgets": {"daily_usd": 0}}, "budgets.daily_usd"),
    ("PATCH", "/api/orgs/{org}", {"budgets": {"monthly_usd": "0.0000000001"}}, "budgets.monthly_usd"),
    ("PATCH", "/api/orgs/{org}", {"budgets": {"monthly_tokens": HUGE}}, "budgets.monthly_tokens"),
    (
        "PATCH",
        "/api/orgs/{org}",
        {"model_limits": {"fake-model": {"requests_per_minute": 0}}},
        "model_limits.fake-model.requests_per_minute",
    ),
    ("PATCH", "/api/orgs/{org}", {"excluded_models": ["two words"]}, "excluded_models"),
    # teams
    ("POST", "/api/teams", {"org_id": "{org}", "name": "x" * 101}, "name"),
    (
        "POST",
        "/api/teams",
        {"org_id": "{org}", "name": "lab", "description": "a\x0bvertical tab"},
        "description",
    ),
    ("POST", "/api/teams", {"org_id": "{org}", "name": "lab", **_limits(0)}, "limits.requests_per_minute"),
    ("PATCH", "/api/teams/{team}", {"name": ""}, "name"),
    (
        "PATCH",
        "/api/teams/{team}",
        {"limits": {"output_tokens_per_minute": HUGE}},
        "limits.output_tokens_per_minute",
    ),
    ("PATCH", "/api/teams/{team}", {"budgets": {"daily_tokens": 0}}, "budgets.daily_tokens"),
    # tokens
    ("POST", "/api/tokens", {"name": ""}, "name"),
    ("POST", "/api/tokens", {"name": "tab\tname"}, "name"),
    ("PATCH", "/api/tokens/{token}", _limits(0), "limits.requests_per_minute"),
    ("PATCH", "/api/tokens/{token}", _limits(HUGE), "limits.requests_per_minute"),
]

# As the team's Team-Admin (a service account belongs to a member of its team).
BAD_SERVICE_ACCOUNTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/api/teams/{team}/service-accounts", {"name": "bot"}, "description"),
    ("POST", "/api/teams/{team}/service-accounts", {"name": "bot", "description": "   "}, "description"),
    ("POST", "/api/teams/{team}/service-accounts", {"name": "", "description": "builds"}, "name"),
    ("POST", "/api/teams/{team}/service-accounts", {"name": "bot", "description": "x" * 1001}, "description"),
    ("PATCH", "/api/service-accounts/{sa}", {"description": ""}, "description"),
    ("PATCH", "/api/service-accounts/{sa}", {"name": "esc\x1b"}, "name"),
]


def _case_id(case: tuple[str, str, dict[str, Any], str]) -> str:
    method, path, body, field = case
    return f"{method} {path} {field}={next(iter(body.values()), '')!r:.30}"


async def _refused(api: Api, client: httpx.AsyncClient, case: tuple[str, str, dict[str, Any], str]) -> None:
    method, path, body, field = case
    fill: Callable[[Any], Any] = lambda v: v.format(**api.ids) if isinstance(v, str) else v  # noqa: E731
    body = {k: fill(v) for k, v in body.items()}
    before = api.world.events()
    answer = await client.request(method, fill(path), json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["field"] == field, problem
    assert problem["code"] in ("invalid_field", "invalid_input")
    assert field.split(".")[-1] in problem["detail"], problem
    assert api.world.events() == before, "a refused input recorded an event"


@pytest.mark.parametrize("case", BAD, ids=_case_id)
async def test_a_bad_admin_input_is_a_422_naming_the_field_and_changes_nothing(api: Api, case) -> None:
    await _refused(api, api.admin, case)


@pytest.mark.parametrize("case", BAD_SERVICE_ACCOUNTS, ids=_case_id)
async def test_a_service_account_needs_a_name_and_the_description_the_user_guide_requires(
    api: Api, case
) -> None:
    await _refused(api, api.team_admin, case)


async def test_the_same_fields_accept_good_values(api: Api) -> None:
    """The rules refuse what is wrong, not what is unusual."""
    good = [
        ("POST", "/api/endpoints", {"slug": "vllm_2", "url": "https://10.0.0.5:8000/v1"}),
        ("POST", "/api/models", {"name": "meta-llama/Llama-3-8B:q4", "endpoint": "vllm_2",
                                 "input_price_per_million": "0.0375", "output_price_per_million": 0}),
        ("POST", "/api/mcp-servers", {"name": "git.tools", "url": "http://tools:9000/mcp"}),
        ("POST", "/api/terms", {"version": "2026-02", "url": "https://example.test/terms"}),
        ("POST", "/api/users", {"email": "ann@uni.example", "name": "Ann-Sophie O'Neil", "org_id": api.ids["org"]}),
        ("PATCH", f"/api/orgs/{api.ids['org']}", {"limits": {"requests_per_minute": 10**12},
                                                  "budgets": {"daily_usd": "0.50", "monthly_tokens": 10**15}}),
        ("PATCH", f"/api/teams/{api.ids['team']}", {"description": "Line one\nline two", "limits": {"requests_per_minute": None}}),
    ]  # fmt: skip
    for method, path, body in good:
        answer = await api.admin.request(method, path, json=body)
        assert answer.status_code in (200, 201), (path, answer.text)


async def test_amounts_in_exponent_notation_are_kept_as_plain_decimals(api: Api) -> None:
    """1e-9 is a valid budget (one nano-dollar), but the UI, the CLI and the API show what is stored:
    "0.000000001", never "1E-9"; "1e3" is "1000", never "1E+3"."""
    answer = await api.admin.patch(
        f"/api/orgs/{api.ids['org']}", json={"budgets": {"daily_usd": 1e-9, "monthly_usd": "1e3"}}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["budgets"] == {"daily_usd": "0.000000001", "monthly_usd": "1000"}
    answer = await api.admin.patch("/api/models/fake-model", json={"output_price_per_million": "1e2"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["output_price_per_million"] == "100"


@pytest.mark.parametrize(
    ("snippet", "where"),
    [
        ("endpoints: [{slug: Bad Slug!, url: 'http://up.test'}]", "endpoints[1].slug"),
        ("endpoints: [{slug: ok, url: 'javascript:alert(1)'}]", "endpoints[1].url"),
        ("models: [{name: fake-model, endpoint: fake, input_price_per_million: 100000000000000000000000000}]",
         "models[0].input_price_per_million"),
        ("orgs: [{name: acme, limits: {requests_per_minute: 0}}]", "orgs[0].limits.requests_per_minute"),
        ("orgs: [{name: acme, teams: [{name: research, limits: {input_tokens_per_minute: 100000000000000000000000000}}]}]",
         "orgs[0].teams[0].limits.input_tokens_per_minute"),
        ("orgs: [{name: acme, budgets: {monthly_usd: -5}}]", "orgs[0].budgets.monthly_usd"),
        ("mcp_servers: [{name: my tools, url: 'http://tools.test/mcp'}]", "mcp_servers[0].name"),
        ("terms: {version: '2', url: 'javascript:alert(1)'}", "terms.url"),
    ],
)  # fmt: skip
def test_aqueduct_yaml_refuses_the_same_values_before_changing_anything(api: Api, snippet, where) -> None:
    # The bad value comes last: the good endpoint before it must not be created either.
    text = "endpoints: [{slug: fresh, url: 'http://fresh.test/v1'}]\n" + snippet
    if snippet.startswith("endpoints:"):
        text = "endpoints: [{slug: fresh, url: 'http://fresh.test/v1'}, " + snippet.split("[", 1)[1]
    before = api.world.events()
    with pytest.raises(InvalidFieldError) as refused:
        apply_config(api.world.app, SYSTEM, parse_config(text))
    assert refused.value.field == where
    assert where in str(refused.value) and refused.value.status == 422
    assert api.world.events() == before and "fresh" not in api.world.app.state.endpoints
