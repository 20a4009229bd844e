"""The people, teams, orgs, limits and tokens the conformance suite needs, made through the public APIs
(directory, auth) as an administrator would, in the product ``aqueduct up`` started.

Every rule gets its own principals and every cell of a rate-limited rule its own token, so that no
rule's counters, budgets or exclusions leak into another cell.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

__all__ = ["CONFIG", "Person", "World", "provision"]

PASSWORD = "conformance-password-1"

# Two endpoints on the same test upstream: a slug route of one must refuse the other's models.
CONFIG = """\
default_org: default
endpoints:
  - slug: fake
    url: {upstream}
    provider: openai
    api_key: ${{FAKE_UPSTREAM_KEY}}
  - slug: other
    url: {upstream}
    provider: openai
    api_key: ${{FAKE_UPSTREAM_KEY}}
models:
  - name: fake-model
    endpoint: fake
    upstream_model: fake-model
    input_price_per_million: 1.0
    output_price_per_million: 2.0
  - name: other-model
    endpoint: other
    upstream_model: fake-model
    input_price_per_million: 1.0
    output_price_per_million: 2.0
  - {{name: excluded-at-org, endpoint: fake, upstream_model: fake-model}}
  - {{name: excluded-at-team, endpoint: fake, upstream_model: fake-model}}
  - {{name: excluded-at-user, endpoint: fake, upstream_model: fake-model}}
orgs:
  - name: default
    sso_group: staff
    limits: {{requests_per_minute: 100000, input_tokens_per_minute: 100000000, output_tokens_per_minute: 100000000}}
    teams:
      - name: research
        description: Research group
"""

LIMIT_KEYS = {
    "rpm": "requests_per_minute",
    "itpm": "input_tokens_per_minute",
    "otpm": "output_tokens_per_minute",
}
# Below what one request of the suite costs: set after one request, the budget is used up.
USED_UP_BUDGET = {"daily_usd": "0.000001"}
# Small enough that two ordinary requests of the suite go over, large enough that one passes.
LIMIT_VALUES = {"rpm": 1, "itpm": 8, "otpm": 8}


@dataclass
class Person:
    email: str
    user_id: str
    headers: dict[str, str]  # a signed-in session's Authorization


@dataclass
class World:
    urls: dict[str, str]
    admin: Person
    org_id: str
    team_id: str
    people: dict[str, Person] = field(default_factory=dict)
    # (purpose, route name) -> token value, and value -> token id
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)
    teams_of: dict[str, str] = field(default_factory=dict)  # person key -> team id
    orgs_of: dict[str, str] = field(default_factory=dict)  # person key -> org id
    mcp_server: str = "tools"
    expires_at: float = 0.0  # when the "expired" token expires (epoch seconds)
    hub_token: str | None = None  # a JupyterHub user's API token (None: no hub installed)

    def token(self, purpose: str, route: str = "*") -> str:
        return self.tokens.get((purpose, route)) or self.tokens[(purpose, "*")]

    def _until(self, token: str, status: int, within: float = 60.0, *, call: bool = False) -> None:
        """Poll ``GET /v1/models`` (``call``: a chat completion, for what only calls that cost meet)
        with ``token`` until it answers ``status`` (the snapshot, quota and terms reach the proxy
        asynchronously)."""
        deadline = time.monotonic() + within
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(timeout=10) as http:
            while True:
                if call:
                    answer = http.post(
                        f"{self.urls['proxy']}/v1/chat/completions",
                        headers=headers,
                        json={
                            "model": "fake-model",
                            "messages": [{"role": "user", "content": "x"}],
                            "max_tokens": 1,
                        },
                    )
                else:
                    answer = http.get(f"{self.urls['proxy']}/v1/models", headers=headers)
                if answer.status_code == status:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"expected {status} within {within}s, got {answer.status_code}")
                time.sleep(0.2)

    def exhaust_budget(self, level: str) -> None:
        """Use up the daily budget of the level (user, team or org) of the "budget-<level>" person: one
        request fits in it and is served; then an Admin lowers the budget below what was spent, so it is
        used up and every route that costs is refused (the quota decision), not only those that would cost
        more."""
        key = f"budget-{level}"
        token = self.token(key)
        with httpx.Client(timeout=30) as http:
            answer = http.post(
                f"{self.urls['proxy']}/v1/chat/completions",
                headers={"Authorization": f"Bearer {token}"},
                json={
                    "model": "fake-model",
                    "messages": [{"role": "user", "content": "spend"}],
                    "max_tokens": 5,
                },
            )
            assert answer.status_code == 200, answer.text
            path = {
                "user": f"/api/users/{self.people[key].user_id}",
                "team": f"/api/teams/{self.teams_of[key]}",
                "org": f"/api/orgs/{self.orgs_of[key]}",
            }[level]
            lowered = http.patch(
                self.urls["directory"] + path, json={"budgets": USED_UP_BUDGET}, headers=self.admin.headers
            )
            assert lowered.status_code == 200, lowered.text
        self._until(token, 429, call=True)

    def publish_terms(self) -> None:
        """Terms of service for everyone; the "tos" user has not accepted them."""
        with httpx.Client(timeout=30) as http:
            answer = http.post(
                f"{self.urls['directory']}/api/terms",
                headers=self.admin.headers,
                json={"version": "conformance-1", "url": "https://example.org/terms"},
            )
            assert answer.status_code < 300, answer.text
        self._until(self.token("tos"), 403)

    def welcome_hub_user(self, token: str, name: str) -> None:
        """The hub user's first call signs them in (a directory user in the org of their SSO group);
        an admin then adds them to the research team, whose MCP server the suite calls."""
        self.hub_token = token
        self._until(token, 200)
        with httpx.Client(timeout=30) as http:
            users = http.get(
                f"{self.urls['directory']}/api/users",
                params={"org_id": self.org_id},
                headers=self.admin.headers,
            ).json()
            user = next(u for u in users if u.get("name") == name or str(u.get("email", "")).startswith(name))
            answer = http.post(
                f"{self.urls['directory']}/api/teams/{self.team_id}/members",
                headers=self.admin.headers,
                json={"user_id": user["id"]},
            )
            assert answer.status_code < 300, answer.text

    def settle_credentials(self) -> None:
        """Wait until the revoked and the regenerated token's old value are refused."""
        self._until(self.token("revoked"), 401)
        self._until(self.token("regenerated"), 401)


async def _ok(answer: httpx.Response) -> Any:
    if answer.status_code >= 400:
        raise AssertionError(
            f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}"
        )
    return answer.json() if answer.content else None


class _Provisioner:
    def __init__(self, http: httpx.AsyncClient, urls: dict[str, str], world: World) -> None:
        self.http, self.urls, self.world = http, urls, world
        self.tag = os.urandom(3).hex()

    async def directory(self, method: str, path: str, who: Person | None = None, **kw: Any) -> Any:
        headers = (who or self.world.admin).headers
        return await _ok(
            await self.http.request(method, f"{self.urls['directory']}/api{path}", headers=headers, **kw)
        )

    async def person(
        self, key: str, org_id: str, team_id: str | None, patch: dict[str, Any] | None = None
    ) -> Person:
        email = f"{key}-{self.tag}@example.org"
        user = await self.directory("POST", "/users", json={"email": email, "name": key, "org_id": org_id})
        await _ok(
            await self.http.post(
                f"{self.urls['auth']}/auth/local-users",
                json={"username": email, "password": PASSWORD, "email": email, "name": key},
                headers=self.world.admin.headers,
            )
        )
        if team_id:
            await self.directory("POST", f"/teams/{team_id}/members", json={"user_id": user["id"]})
        if patch:
            await self.directory("PATCH", f"/users/{user['id']}", json=patch)
        pair = await _ok(
            await self.http.post(
                f"{self.urls['auth']}/auth/token", json={"username": email, "password": PASSWORD}
            )
        )
        person = Person(email, user["id"], {"Authorization": f"Bearer {pair['access_token']}"})
        self.world.people[key] = person
        if team_id:
            self.world.teams_of[key] = team_id
        self.world.orgs_of[key] = org_id
        return person

    async def issue(self, who: Person, purpose: str, route: str = "*", **body: Any) -> str:
        team = self.world.teams_of.get(next(k for k, p in self.world.people.items() if p is who), None)
        answer = await self.directory(
            "POST", "/tokens", who, json={"name": f"{purpose}:{route}"[:100], "team_id": team, **body}
        )
        value = answer["value"]
        self.world.tokens[(purpose, route)] = value
        self.world.token_ids[value] = answer["token"]["id"]
        return value


async def provision(
    urls: dict[str, str],
    admin_username: str,
    admin_password: str,
    mcp_url: str,
    limited_cells: list[tuple[str, str]],
    plain_cells: list[str],
) -> World:
    """``limited_cells``: (rule, route) pairs that each need a fresh token of the rule's principal;
    ``plain_cells``: routes that each need a fresh token of a plain user (the usage-row checks)."""
    async with httpx.AsyncClient(timeout=60) as http:
        pair = await _ok(
            await http.post(
                f"{urls['auth']}/auth/token", json={"username": admin_username, "password": admin_password}
            )
        )
        admin_headers = {"Authorization": f"Bearer {pair['access_token']}"}
        me = await _ok(await http.get(f"{urls['directory']}/api/me", headers=admin_headers))
        org_id = me["org_id"]
        teams = await _ok(
            await http.get(f"{urls['directory']}/api/teams", params={"org_id": org_id}, headers=admin_headers)
        )
        team_id = next(t["id"] for t in teams if t["name"] == "research")
        world = World(urls, Person("admin", me["id"], admin_headers), org_id, team_id)
        p = _Provisioner(http, urls, world)
        await p.directory("PATCH", f"/orgs/{org_id}", json={"excluded_models": ["excluded-at-org"]})
        excl_team = await p.directory("POST", "/teams", json={"org_id": org_id, "name": f"excl-{p.tag}"})
        await p.directory(
            "PATCH", f"/teams/{excl_team['id']}", json={"excluded_models": ["excluded-at-team"]}
        )
        await p.directory(
            "POST",
            "/mcp-servers",
            json={"name": world.mcp_server, "url": mcp_url, "allowed_team_ids": [team_id]},
        )

        plain = await p.person("plain", org_id, team_id)
        await p.person("excl-team", org_id, excl_team["id"])
        await p.person("excl-user", org_id, team_id, {"excluded_models": ["excluded-at-user"]})
        tiny = {"daily_usd": "0.0001"}  # one request of the suite fits (its worst case is $0.000019)
        await p.person("budget-user", org_id, team_id, {"budgets": tiny})
        budget_team = await p.directory("POST", "/teams", json={"org_id": org_id, "name": f"budget-{p.tag}"})
        await p.directory("PATCH", f"/teams/{budget_team['id']}", json={"budgets": tiny})
        await p.person("budget-team", org_id, budget_team["id"])
        budget_org = await p.directory("POST", "/orgs", json={"name": f"budget-org-{p.tag}", "budgets": tiny})
        budget_org_team = await p.directory(
            "POST", "/teams", json={"org_id": budget_org["id"], "name": "only"}
        )
        await p.person("budget-org", budget_org["id"], budget_org_team["id"])
        for dim, key in LIMIT_KEYS.items():
            limit = {key: LIMIT_VALUES[dim]}
            await p.person(f"{dim}-user", org_id, team_id, {"limits": limit})
            await p.person(f"{dim}-model", org_id, team_id, {"model_limits": {"fake-model": limit}})
            team = await p.directory(
                "POST", "/teams", json={"org_id": org_id, "name": f"{dim}-team-{p.tag}", "limits": limit}
            )
            await p.person(f"{dim}-team", org_id, team["id"])
            org = await p.directory("POST", "/orgs", json={"name": f"{dim}-org-{p.tag}", "limits": limit})
            org_team = await p.directory("POST", "/teams", json={"org_id": org["id"], "name": "only"})
            await p.person(f"{dim}-org", org["id"], org_team["id"])
        await p.person("tos", org_id, team_id)
        # The MCP server serves the teams whose requests-per-minute limits the suite checks on it too.
        mcp_teams = sorted({team_id, world.teams_of["rpm-team"], world.teams_of["rpm-org"]})
        await p.directory("PATCH", f"/mcp-servers/{world.mcp_server}", json={"allowed_team_ids": mcp_teams})
        # The service account of the research team, with its one token (its creator must be a member).
        await p.directory("POST", f"/teams/{team_id}/members", json={"user_id": world.admin.user_id})
        sa = await p.directory(
            "POST",
            f"/teams/{team_id}/service-accounts",
            json={"name": f"sa-{p.tag}", "description": "calls every route for the conformance suite"},
        )
        world.tokens[("service_account", "*")] = sa["value"]
        world.token_ids[sa["value"]] = sa["token"]["id"]

        # Plain tokens for the rules that spend nothing, one per route for the usage rows.
        for purpose in ("ok", "model", "body", "revoked", "regenerated"):
            await p.issue(plain, purpose)
        for route in plain_cells:
            await p.issue(plain, "usage", route)
            await p.issue(plain, "stream", route)
        for key in ("excl-team", "excl-user", "budget-user", "budget-team", "budget-org", "tos"):
            await p.issue(world.people[key], key)
        expires = datetime.now(UTC) + timedelta(seconds=3)
        await p.issue(plain, "expired", expires_at=expires.isoformat())
        world.expires_at = expires.timestamp()

        sem = asyncio.Semaphore(6)

        async def cell_token(rule: str, route: str) -> None:
            async with sem:
                dim, _, level = rule.partition("_")
                if level == "token" or rule == "too_large":
                    value = await p.issue(plain, rule, route)
                    limit = (
                        {"input_tokens_per_minute": 5}
                        if rule == "too_large"
                        else {LIMIT_KEYS[dim]: LIMIT_VALUES[dim]}
                    )
                    await p.directory("PATCH", f"/tokens/{world.token_ids[value]}", json={"limits": limit})
                else:
                    await p.issue(world.people[f"{dim}-{level}"], rule, route)

        await asyncio.gather(*(cell_token(rule, route) for rule, route in limited_cells))

        revoked = world.token("revoked")
        await p.directory("DELETE", f"/tokens/{world.token_ids[revoked]}")
        old = world.token("regenerated")
        fresh = await p.directory("POST", f"/tokens/{world.token_ids[old]}/regenerate")
        world.tokens[("regenerated-new", "*")] = fresh["value"]
        world.tokens[("regenerated", "*")] = old
        return world


async def wait_until_usable(proxy: str, values: list[str], within: float = 60.0) -> None:
    """The snapshot reaches the proxy asynchronously: wait until every token authenticates."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=10) as http:
        for value in values:
            while True:
                answer = await http.get(f"{proxy}/v1/models", headers={"Authorization": f"Bearer {value}"})
                if answer.status_code == 200:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"token not usable after {within}s: {answer.status_code} {answer.text}"
                    )
                await asyncio.sleep(0.1)


def write_config(path: Path, upstream_url: str) -> Path:
    path.write_text(CONFIG.format(upstream=upstream_url))
    return path
