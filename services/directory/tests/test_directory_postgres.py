"""The same directory on PostgreSQL (eventsourcing's built-in persistence), against a real server."""

from __future__ import annotations

import uuid

import pytest
from directory_testkit import SECRET, Clock, common_settings, make_world, wait_until

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_directory.adapters.persistence import event_store_env, open_position_store
from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.bootstrap import bootstrap
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs import names
from aqueduct_libs.tokens import hash_token

pytestmark = pytest.mark.postgres

SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def database_url():
    psycopg = pytest.importorskip("psycopg")
    name = f"aqueduct_directory_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{SERVER}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_rules_and_restart_on_postgres(database_url, tmp_path):
    env = event_store_env(database_url, tmp_path)
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    app = DirectoryApp(env=env, secret_key=SECRET, clock=Clock(), max_tokens_per_user=1)
    world = make_world(app)
    issued = app.issue_token(world.p(world.member), "t")
    with pytest.raises(Exception, match="token limit"):
        app.issue_token(world.p(world.member), "two")
    sa = app.create_service_account(world.p(world.team_admin), world.team, "bot", "runs the nightly jobs")
    app.close()
    reopened = DirectoryApp(env=env, secret_key=SECRET, clock=Clock())
    try:
        assert reopened.state.position == app.state.position
        assert reopened.state.token_by_hash[hash_token(issued["value"], SECRET)] == issued["token"]["id"]
        assert reopened.state.service_accounts[sa["service_account"]["id"]].owner_user_id == world.team_admin
        positions = open_position_store(env)
        positions.set("outbox_relay", 7)
        assert positions.get("outbox_relay") == 7
        positions.close()
    finally:
        reopened.close()


@pytest.mark.nats
async def test_service_relays_and_projects_from_postgres(database_url, tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    service = await bootstrap(
        DirectorySettings(database_url=database_url, common=common_settings(server.url, tmp_path / "data"))
    )
    try:
        await service.start()
        world = make_world(service.directory)
        value = service.directory.issue_token(world.p(world.member), "t")["value"]
        key = names.snapshot_token_key(hash_token(value, SECRET))
        await wait_until(lambda: key in service.projector.published, within=20)
        await wait_until(lambda: service.relay.position == world.events(), within=20)
        replayed = await service.replay()
        assert replayed["events"] == world.events() and key in service.projector.published
    finally:
        await service.stop()
        server.stop()
