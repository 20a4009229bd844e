"""Roles from the identity provider's groups are re-evaluated at every sign-in; roles an Admin granted in
the product stay until an Admin takes them away. The directory keeps where each Admin grant came from."""

from __future__ import annotations

import pytest
from directory_testkit import make_app, make_world

IDP = "oidc:https://idp.example"


@pytest.fixture
def world(tmp_path):
    return make_world(make_app(tmp_path))


def test_the_admin_group_grants_admin_and_leaving_it_takes_it_back(world):
    app = world.app
    first = app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff", "admins"], admin=True)
    assert first["admin"] is True
    assert app.get_user(world.p(world.admin), first["user_id"])["admin_from_sign_in"] is True

    left = app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff"], admin=False)
    assert left["admin"] is False
    assert app.state.users[first["user_id"]].admin is False

    rejoined = app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff", "admins"], admin=True)
    assert rejoined["admin"] is True


def test_a_user_who_joins_the_admin_group_later_becomes_admin(world):
    app = world.app
    plain = app.sign_in(f"{IDP}:alice", "alice@acme.test", "Alice", ["staff"])
    assert plain["admin"] is False

    promoted = app.sign_in(f"{IDP}:alice", "alice@acme.test", "Alice", ["staff", "admins"], admin=True)
    assert promoted["admin"] is True


def test_admin_granted_in_the_product_stays_when_the_groups_do_not_say_so(world):
    app = world.app
    alice = app.sign_in(f"{IDP}:alice", "alice@acme.test", "Alice", ["staff"])["user_id"]
    app.update_user(world.p(world.admin), alice, admin=True)

    assert app.get_user(world.p(world.admin), alice)["admin_from_sign_in"] is False
    again = app.sign_in(f"{IDP}:alice", "alice@acme.test", "Alice", ["staff"], admin=False)

    assert again["admin"] is True  # an Admin's grant: only an Admin takes it away
    app.update_user(world.p(world.admin), alice, admin=False)
    assert app.sign_in(f"{IDP}:alice", "alice@acme.test", "Alice", ["staff"])["admin"] is False


def test_a_group_grant_an_admin_confirmed_in_the_product_stays_sticky_only_if_granted_there(world):
    """An IdP grant that an Admin then revokes in the product comes back while the user is in the
    group (the IdP is the source of that grant); the revocation that sticks is leaving the group."""
    app = world.app
    root = app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff", "admins"], admin=True)["user_id"]
    app.update_user(world.p(world.admin), root, admin=False)
    assert app.state.users[root].admin is False

    assert app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff", "admins"], admin=True)["admin"]
    assert not app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff"], admin=False)["admin"]


def test_the_origin_survives_a_restart(world, tmp_path):
    app = world.app
    root = app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff"], admin=True)["user_id"]
    reopened = make_app(tmp_path)

    assert reopened.state.users[root].admin_from_sign_in is True
    assert reopened.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["staff"], admin=False)["admin"] is False


def test_a_renewing_session_changes_no_role(world):
    """A refresh replays the claims of its sign-in, maybe days old: it neither brings back an Admin role
    that an Admin took away in the product, nor takes one away."""
    app = world.app
    root = app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["admins"], admin=True)["user_id"]
    app.update_user(world.p(world.admin), root, admin=False)

    renewed = app.sign_in(f"{IDP}:root", "root@acme.test", "Root", ["admins"], admin=True, renewal=True)

    assert renewed["admin"] is False
    app.update_user(world.p(world.admin), root, admin=True)
    assert (
        app.sign_in(f"{IDP}:root", "root@acme.test", "Root", [], admin=False, renewal=True)["admin"] is True
    )
