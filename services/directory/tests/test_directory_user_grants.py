"""A user's own grant (snapshot key ``user.<id>``): what a credential naming the user may do.

The proxy's JupyterHub bridge serves hub tokens from it, so it must follow every change that affects
the user, like a token grant does, and disappear when the user is deactivated.
"""

from __future__ import annotations

import nats
import pytest
from directory_testkit import common_settings, make_app, make_world, wait_until

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_directory.adapters.projection import compute_snapshot
from aqueduct_directory.bootstrap import bootstrap
from aqueduct_directory.domain.grants import token_grant, user_grant
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs import names
from aqueduct_libs.bus import read_bucket
from aqueduct_libs.snapshot import TokenGrant, UserRoles


@pytest.fixture
def world(tmp_path):
    return make_world(make_app(tmp_path))


def grant(world, user_id: str) -> TokenGrant | None:
    return user_grant(world.app.state, world.app.state.users[user_id])


def test_a_user_grant_has_the_users_effective_limits_models_and_terms(world):
    app = world.app
    app.register_endpoint(SYSTEM, "openai", "http://upstream/v1")
    for name in ("a", "b", "c"):
        app.register_model(SYSTEM, name, "openai")
    member = grant(world, world.member)
    assert member is not None
    assert (member.token_id, member.token_hash, member.user_id) == (f"user:{world.member}", "", world.member)
    assert (member.team_id, member.org_id) == (world.team, world.org)
    assert member.limits.requests_per_minute == 60 and member.allowed_models is None  # org default

    app.update_team(SYSTEM, world.team, limits={"requests_per_minute": 30}, excluded_models=["c"])
    assert grant(world, world.member).limits.requests_per_minute == 30  # team over org
    app.update_user(SYSTEM, world.member, limits={"requests_per_minute": 5}, excluded_models=["a"])
    member = grant(world, world.member)
    assert member.limits.requests_per_minute == 5 and member.allowed_models == ["b"]  # user over team

    app.publish_terms(SYSTEM, "v2", "https://tos.test/v2")
    assert grant(world, world.member).tos_accepted is False
    app.accept_terms(world.p(world.member), "v2")
    assert grant(world, world.member).tos_accepted is True

    # The same entitlements as the user's personal token (the token has no limits of its own).
    token_id = app.issue_token(world.p(world.member), "laptop")["token"]["id"]
    token = token_grant(app.state, app.state.tokens[token_id])
    member = grant(world, world.member)
    assert member.model_dump(exclude={"token_id", "token_hash", "name", "roles"}) == token.model_dump(
        exclude={"token_id", "token_hash", "name", "roles"}
    )
    assert token.roles is None  # roles are the user's, on their own entry only


def test_a_user_grant_carries_the_users_current_roles(world):
    """What the auth and accounting services check a session token's holder against."""
    app = world.app
    assert grant(world, world.admin).roles == UserRoles(admin=True)
    assert grant(world, world.org_admin).roles == UserRoles(org_admin=True)
    assert grant(world, world.team_admin).roles == UserRoles(
        team_ids=[world.team], team_admin_ids=[world.team]
    )
    assert grant(world, world.member).roles == UserRoles(team_ids=[world.team])

    app.update_user(SYSTEM, world.admin, admin=False)
    app.update_user(SYSTEM, world.member, org_admin=True)
    app.demote_member(SYSTEM, world.team, world.team_admin)
    app.promote_member(SYSTEM, world.team, world.member)
    assert grant(world, world.admin).roles == UserRoles()
    assert grant(world, world.team_admin).roles == UserRoles(team_ids=[world.team])
    assert grant(world, world.member).roles == UserRoles(
        org_admin=True, team_ids=[world.team], team_admin_ids=[world.team]
    )
    # A plain user's entry still says so (an empty ``roles``), not "no roles published".
    encoded = compute_snapshot(app.state)[names.snapshot_user_key(world.admin)]
    assert TokenGrant.model_validate_json(encoded).roles == UserRoles()


def test_a_user_outside_teams_and_a_deactivated_user(world):
    outsider = grant(world, world.outsider)
    assert outsider is not None and outsider.team_id is None and outsider.org_id == world.other_org
    world.app.remove_member(SYSTEM, world.team, world.member)
    assert grant(world, world.member).team_id is None
    world.app.deactivate_user(SYSTEM, world.member)
    assert grant(world, world.member) is None
    assert names.snapshot_user_key(world.member) not in compute_snapshot(world.app.state)
    assert names.snapshot_user_key(world.team_admin) in compute_snapshot(world.app.state)


@pytest.mark.nats
async def test_the_snapshot_keeps_user_grants_current(tmp_path):
    bus = EmbeddedNats(tmp_path / "nats").start()
    service = await bootstrap(DirectorySettings(common=common_settings(bus.url, tmp_path / "data")))
    nc = None
    try:
        await service.start()
        await wait_until(service.ready)
        nc = await nats.connect(bus.url)
        app = service.directory
        world = make_world(app)
        key = names.snapshot_user_key(world.member)

        async def published() -> TokenGrant | None:
            await service.projector.flush()
            value = (await read_bucket(nc.jetstream(), names.AUTH_SNAPSHOT_BUCKET)).get(key)
            return TokenGrant.model_validate_json(value) if value is not None else None

        async def rpm_is(expected: int) -> bool:
            found = await published()
            return found is not None and found.limits.requests_per_minute == expected

        await wait_until(lambda: rpm_is(60))
        app.update_org(SYSTEM, world.org, limits={"requests_per_minute": 40})  # org-wide change
        await wait_until(lambda: rpm_is(40))
        app.update_team(SYSTEM, world.team, limits={"requests_per_minute": 20})  # team change
        await wait_until(lambda: rpm_is(20))
        app.remove_member(SYSTEM, world.team, world.member)  # left the team: the org default again
        await wait_until(lambda: rpm_is(40))
        app.update_user(SYSTEM, world.member, limits={"requests_per_minute": 7})
        await wait_until(lambda: rpm_is(7))
        app.publish_terms(SYSTEM, "v1", "https://tos.test/v1")  # terms: every user must accept

        async def terms_pending() -> bool:
            found = await published()
            return found is not None and found.tos_accepted is False

        await wait_until(terms_pending)
        app.update_user(SYSTEM, world.member, admin=True)  # roles are published with the grant

        async def admin() -> bool:
            found = await published()
            return found is not None and found.roles is not None and found.roles.admin

        await wait_until(admin)
        app.deactivate_user(SYSTEM, world.member)

        async def deleted() -> bool:
            return await published() is None

        await wait_until(deleted)
        users = [
            k
            for k in await read_bucket(nc.jetstream(), names.AUTH_SNAPSHOT_BUCKET)
            if k.startswith(names.SNAPSHOT_USER_PREFIX)
        ]
        assert len(users) == 4  # the world's five users, less the deactivated one
    finally:
        if nc is not None:
            await nc.drain()
        await service.stop()
        bus.stop()
