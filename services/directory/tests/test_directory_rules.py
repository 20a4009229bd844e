"""The directory's rules as stories: construct, evolve, query."""

from __future__ import annotations

from datetime import timedelta

import pytest
from directory_testkit import SECRET, Clock, make_app, make_world

from aqueduct_directory.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from aqueduct_directory.domain.grants import token_grant
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_libs.tokens import hash_token


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(tmp_path, clock):
    return make_world(make_app(tmp_path, clock, max_tokens_per_user=3, max_service_accounts_per_team=2))


def grant_of(world, token_id):
    return token_grant(world.app.state, world.app.state.tokens[token_id])


def test_token_value_is_shown_once_and_only_its_keyed_hash_is_stored(world, tmp_path):
    answer = world.app.issue_token(world.p(world.member), "laptop")
    value = answer["value"]
    assert value.startswith("aq-") and answer["token"]["preview"] == f"{value[:7]}...{value[-4:]}"
    assert world.app.state.token_by_hash[hash_token(value, SECRET)] == answer["token"]["id"]
    assert value.encode() not in (tmp_path / "directory.sqlite").read_bytes()
    assert all(value not in str(t) for t in world.app.list_tokens(world.p(world.member)))


def test_token_cap_per_user(world):
    for i in range(3):
        world.app.issue_token(world.p(world.member), f"t{i}")
    with pytest.raises(ConflictError) as err:
        world.app.issue_token(world.p(world.member), "one too many")
    assert err.value.code == "token_cap_reached"
    # A deleted token frees its place.
    first = world.app.list_tokens(world.p(world.member))[0]["id"]
    world.app.revoke_token(world.p(world.member), first)
    world.app.issue_token(world.p(world.member), "replacement")


def test_expiry_must_be_in_the_future_and_expired_tokens_are_not_live(world, clock):
    with pytest.raises(InvalidInputError):
        world.app.issue_token(world.p(world.member), "old", expires_at=clock.now - timedelta(seconds=1))
    token = world.app.issue_token(world.p(world.member), "short", expires_at=clock.now + timedelta(hours=1))
    stored = world.app.state.tokens[token["token"]["id"]]
    assert stored.is_live(clock.now)
    clock.advance(hours=2)
    assert not stored.is_live(clock.now)
    assert grant_of(world, stored.id.__str__()).expires_at == stored.expires_at


def test_regenerate_replaces_the_hash(world):
    issued = world.app.issue_token(world.p(world.member), "ci")
    again = world.app.regenerate_token(world.p(world.member), issued["token"]["id"])
    assert again["value"] != issued["value"]
    assert hash_token(issued["value"], SECRET) not in world.app.state.token_by_hash
    assert world.app.state.token_by_hash[hash_token(again["value"], SECRET)] == issued["token"]["id"]


def test_effective_limits_token_over_user_over_team_over_org(world):
    token_id = world.app.issue_token(world.p(world.member), "t")["token"]["id"]
    assert grant_of(world, token_id).limits.requests_per_minute == 60  # org default
    world.app.update_team(
        SYSTEM, world.team, limits={"requests_per_minute": 120, "input_tokens_per_minute": 5}
    )
    assert grant_of(world, token_id).limits.requests_per_minute == 120
    world.app.update_user(SYSTEM, world.member, limits={"requests_per_minute": 7})
    grant = grant_of(world, token_id)
    assert (grant.limits.requests_per_minute, grant.limits.input_tokens_per_minute) == (7, 5)
    world.app.set_token_limits(SYSTEM, token_id, {"requests_per_minute": 3})
    assert grant_of(world, token_id).limits.requests_per_minute == 3


def test_per_model_limits_and_exclusion_inheritance(world):
    for name in ("cheap", "gpt-4o", "o1"):
        if not world.app.state.endpoints:
            world.app.register_endpoint(SYSTEM, "openai", "http://upstream/v1")
        world.app.register_model(SYSTEM, name, "openai")
    token_id = world.app.issue_token(world.p(world.member), "t")["token"]["id"]
    assert grant_of(world, token_id).allowed_models is None  # nothing excluded: every model
    world.app.update_org(
        SYSTEM, world.org, excluded_models=["o1"], model_limits={"gpt-4o": {"requests_per_minute": 2}}
    )
    world.app.update_team(SYSTEM, world.team, model_limits={"gpt-4o": {"output_tokens_per_minute": 100}})
    grant = grant_of(world, token_id)
    assert grant.allowed_models == ["cheap", "gpt-4o"]
    assert grant.model_limits["gpt-4o"].requests_per_minute == 2
    assert grant.model_limits["gpt-4o"].output_tokens_per_minute == 100
    # A lower level cannot re-allow what the org excluded; it can only exclude more.
    world.app.update_team(SYSTEM, world.team, excluded_models=[])
    world.app.update_user(SYSTEM, world.member, excluded_models=["cheap"])
    assert grant_of(world, token_id).allowed_models == ["gpt-4o"]


def test_service_account_lifecycle(world):
    ta = world.p(world.team_admin)
    created = world.app.create_service_account(ta, world.team, "ci-bot", "builds")
    sa_id, token_id = created["service_account"]["id"], created["token"]["id"]
    assert created["service_account"]["owner_user_id"] == world.team_admin
    assert grant_of(world, token_id).service_account_id == sa_id
    # The owner cannot leave the team while owning it.
    with pytest.raises(ConflictError) as err:
        world.app.remove_member(ta, world.team, world.team_admin)
    assert err.value.code == "owns_service_account"
    # Ownership moves only to a member of the team.
    with pytest.raises(InvalidInputError):
        world.app.update_service_account(ta, sa_id, owner_user_id=world.org_admin)
    world.app.update_service_account(ta, sa_id, owner_user_id=world.member)
    assert grant_of(world, token_id).user_id == world.member
    world.app.remove_member(world.p(world.admin), world.team, world.team_admin)
    with pytest.raises(ConflictError):
        world.app.remove_member(world.p(world.admin), world.team, world.member)
    # Team-Admins see and regenerate the team's token; deleting the account deletes its token.
    assert token_id in {t["id"] for t in world.app.list_tokens(world.p(world.member))}
    world.app.delete_service_account(world.p(world.admin), sa_id)
    assert world.app.state.tokens[token_id].revoked and grant_of(world, token_id) is None


def test_service_account_cap_per_team(world):
    ta = world.p(world.team_admin)
    world.app.create_service_account(ta, world.team, "a", "runs the nightly jobs")
    world.app.create_service_account(ta, world.team, "b", "runs the nightly jobs")
    with pytest.raises(ConflictError):
        world.app.create_service_account(ta, world.team, "c", "runs the nightly jobs")


def test_deleting_a_team_deletes_its_service_accounts_and_their_tokens(world):
    created = world.app.create_service_account(
        world.p(world.team_admin), world.team, "bot", "runs the nightly jobs"
    )
    world.app.delete_team(world.p(world.org_admin), world.team)
    assert world.app.state.tokens[created["token"]["id"]].revoked
    assert world.app.state.service_accounts[created["service_account"]["id"]].deleted
    assert world.team not in world.app.principal(world.member).team_ids


def test_terms_of_service_must_be_accepted(world):
    token_id = world.app.issue_token(world.p(world.member), "t")["token"]["id"]
    world.app.publish_terms(SYSTEM, "2026-01", "https://example.test/tos/2026-01")
    grant = grant_of(world, token_id)
    assert not grant.tos_accepted and grant.tos_url == "https://example.test/tos/2026-01"
    with pytest.raises(NotFoundError):
        world.app.accept_terms(world.p(world.member), "2025-01")
    world.app.accept_terms(world.p(world.member), "2026-01")
    assert grant_of(world, token_id).tos_accepted


def test_mcp_servers_are_granted_per_team(world):
    token_id = world.app.issue_token(world.p(world.member), "t")["token"]["id"]
    world.app.register_mcp_server(SYSTEM, "search", "http://mcp.test", [world.team])
    world.app.register_mcp_server(SYSTEM, "ops-tools", "http://ops.test", [world.other_team])
    assert grant_of(world, token_id).allowed_mcp_servers == ["search"]


def test_sign_in_provisions_once_and_maps_groups(world):
    first = world.app.sign_in("oidc:https://idp:42", "new@acme.test", "New", ["staff"])
    again = world.app.sign_in("oidc:https://idp:42", "new@acme.test", "New", ["staff"])
    assert first["user_id"] == again["user_id"] and first["org_id"] == world.org
    assert (
        world.app.sign_in("oidc:https://idp:43", "g@globex.test", "G", ["globex-staff"])["org_id"]
        == world.other_org
    )
    with pytest.raises(NotFoundError):
        world.app.sign_in("oidc:https://idp:44", "nobody@x.test", "N", ["unknown"])
    # Local accounts land in the default org (created on demand); admin=true grants Admin.
    local = world.app.sign_in("local:admin", "", "admin", [], admin=True)
    assert local["admin"] and world.app.state.orgs[local["org_id"]].name == "default"
    # A user invited by email is linked to the identity on first sign-in.
    linked = world.app.sign_in("oidc:https://idp:45", "member@acme.test", "Member", [], email_verified=True)
    assert linked["user_id"] == world.member and linked["teams"] == [world.team]
    # An unverified email never links: it is a new identity (here with no org mapped, so refused).
    with pytest.raises(NotFoundError):
        world.app.sign_in("oidc:https://idp:46", "oa@acme.test", "Mallory", [])


def test_an_org_admin_cannot_change_an_admins_profile(world):
    with pytest.raises(PermissionDeniedError):
        world.app.update_user(world.p(world.org_admin), world.admin, email="mallory@acme.test")
    world.app.update_user(world.p(world.admin), world.admin, name="Still Admin")  # their own: fine


def test_read_model_survives_a_restart(world, tmp_path, clock):
    world.app.issue_token(world.p(world.member), "t")
    reopened = make_app(tmp_path, clock)
    assert reopened.state.position == world.app.state.position
    assert reopened.list_tokens(reopened.principal(world.member)) == world.app.list_tokens(
        world.p(world.member)
    )


def test_deactivated_users_lose_every_token_but_keep_their_history(world):
    token_id = world.app.issue_token(world.p(world.member), "t")["token"]["id"]
    sa = world.app.create_service_account(
        world.p(world.team_admin), world.team, "bot", "runs the nightly jobs"
    )
    with pytest.raises(ConflictError):
        world.app.deactivate_user(world.p(world.org_admin), world.team_admin)  # owns a service account
    world.app.deactivate_user(world.p(world.org_admin), world.member)
    assert grant_of(world, token_id) is None
    assert grant_of(world, sa["token"]["id"]) is not None
    assert world.member not in {u["id"] for u in world.app.list_users(world.p(world.org_admin))}
    events = world.events()
    with pytest.raises(NotFoundError):
        world.app.sign_in("oidc:idp:member", "member@acme.test", "Member", email_verified=True)
    assert world.events() == events
    with pytest.raises(PermissionDeniedError):
        world.app.principal(world.member)


def test_budgets_are_stored_as_exact_values_for_accounting(world):
    org = world.app.update_org(SYSTEM, world.org, budgets={"daily_usd": 10, "monthly_usd": "199.99"})
    assert org["budgets"] == {"daily_usd": "10", "monthly_usd": "199.99"}
    team = world.app.update_team(SYSTEM, world.team, budgets={"daily_tokens": 50_000})
    assert team["budgets"] == {"daily_tokens": 50000}
    with pytest.raises(InvalidInputError):
        world.app.update_user(SYSTEM, world.member, budgets={"daily_usd": -1})
    with pytest.raises(InvalidInputError):
        world.app.update_user(SYSTEM, world.member, budgets={"weekly_usd": 1})
    last = list(world.app.iter_events())[-1][1]
    assert type(last).__name__ == "TeamBudgetsSet" and last.budgets == {"daily_tokens": 50000}


def test_catalog_rules(world):
    app = world.app
    with pytest.raises(NotFoundError):
        app.register_model(SYSTEM, "m", "nowhere")
    app.register_endpoint(SYSTEM, "vllm", "http://vllm:8000/v1", "openai")
    with pytest.raises(ConflictError):
        app.register_endpoint(SYSTEM, "vllm", "http://other/v1")
    with pytest.raises(InvalidInputError):
        app.register_endpoint(SYSTEM, "bad", "http://x/v1", provider="gopher")
    # The gateway's own secrets can never become an upstream credential, nor can a non-name.
    for key_env in ("AQUEDUCT_SECRET_KEY", "aqueduct_proxy_redis_url", "OPENAI KEY", "$(id)"):
        with pytest.raises(InvalidInputError):
            app.register_endpoint(SYSTEM, "leak", "http://attacker/v1", api_key_env=key_env)
        with pytest.raises(InvalidInputError):
            app.register_mcp_server(SYSTEM, "leak", "http://attacker/mcp", api_key_env=key_env)
    app.register_model(SYSTEM, "llama3:8b", "vllm", input_price_per_million="0.05")
    with pytest.raises(ConflictError) as err:
        app.remove_endpoint(SYSTEM, "vllm")
    assert err.value.code == "endpoint_in_use"
    with pytest.raises(InvalidInputError):
        app.update_model(SYSTEM, "llama3:8b", fallbacks=["llama3:8b"])
    app.remove_model(SYSTEM, "llama3:8b")
    app.remove_endpoint(SYSTEM, "vllm")
    assert app.list_endpoints() == [] and app.list_models(SYSTEM) == []
    # A removed name can be registered again (the same aggregate comes back).
    app.register_endpoint(SYSTEM, "vllm", "http://vllm2:8000/v1")
    assert app.list_endpoints()[0]["url"] == "http://vllm2:8000/v1"


def test_names_and_memberships(world):
    app = world.app
    with pytest.raises(ConflictError):
        app.create_team(SYSTEM, world.org, "research")
    app.create_team(SYSTEM, world.other_org, "research")  # names are unique per org only
    with pytest.raises(ConflictError):
        app.create_org(SYSTEM, "acme")
    with pytest.raises(ConflictError):
        app.create_user(SYSTEM, world.org, "MEMBER@acme.test")
    with pytest.raises(ConflictError):
        app.add_member(SYSTEM, world.team, world.member)
    with pytest.raises(InvalidInputError):
        app.add_member(SYSTEM, world.team, world.outsider)  # another org's user
    with pytest.raises(InvalidInputError):
        app.issue_token(world.p(world.member), "t", team_id=world.other_team)  # not a member there
    app.promote_member(world.p(world.team_admin), world.team, world.member)
    assert world.team in world.p(world.member).team_admin_ids
    token = app.issue_token(world.p(world.member), "ops work", team_id=world.team)
    assert token["token"]["team_id"] == world.team


def test_new_users_join_the_default_team_of_their_org(world):
    world.app.update_org(SYSTEM, world.org, default_team_id=world.other_team)
    with pytest.raises(InvalidInputError):
        other_org_team = world.app.create_team(SYSTEM, world.other_org, "elsewhere")["id"]
        world.app.update_org(SYSTEM, world.org, default_team_id=other_org_team)
    joined = world.app.sign_in("oidc:idp:new", "new@acme.test", "New", ["staff"])
    assert joined["teams"] == [world.other_team] and joined["team_admin"] == []
    # Existing users are not moved when they sign in again.
    assert world.app.sign_in("oidc:idp:member", "member@acme.test", "Member", email_verified=True)[
        "teams"
    ] == [world.team]


def test_config_names_the_default_team_and_ignores_other_sections(tmp_path):
    from aqueduct_directory.application.config_apply import apply_config, parse_config

    app = make_app(tmp_path)
    config = parse_config(
        "proxy: {anything: 1}\norgs:\n  - name: lab\n    default_team: all\n    teams: [{name: all}, {name: core}]\n"
    )
    assert apply_config(app, SYSTEM, config, dry_run=True) == [
        "create org lab",
        "create team lab/all",
        "create team lab/core",
    ]
    changes = apply_config(app, SYSTEM, config)
    assert changes[-1] == "update org lab: default_team"
    assert apply_config(app, SYSTEM, config) == []
    kim = app.sign_in("local:kim", "", "Kim", [])
    assert app.state.orgs[kim["org_id"]].name == "default" and kim["teams"] == []  # local users: default org
    lab = app.state.org_by_name("lab")
    assert app.state.teams[lab.default_team_id].name == "all"
    with pytest.raises(InvalidInputError):
        parse_config("orgs: [{name: lab, colour: blue}]")  # inside a section, typos are errors
