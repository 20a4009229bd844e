"""The directory over a real NATS server: outbox relay, KV snapshot, replay and the sign-in RPC."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from directory_testkit import SECRET, common_settings, make_world, wait_until

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_directory.bootstrap import bootstrap
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs import names
from aqueduct_libs.bus import read_bucket
from aqueduct_libs.events import DirectoryEvent
from aqueduct_libs.snapshot import EndpointRoute, McpServerRoute, ModelRoute, SnapshotMeta, TokenGrant
from aqueduct_libs.tokens import hash_token

pytestmark = pytest.mark.nats


@pytest.fixture
async def bus(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def service(bus, tmp_path):
    svc = await bootstrap(DirectorySettings(common=common_settings(bus.url, tmp_path / "data")))
    await svc.start()
    await wait_until(svc.ready)
    yield svc
    await svc.stop()


@pytest.fixture
async def client(bus):
    nc = await nats.connect(bus.url)
    yield nc
    if not nc.is_closed:
        await nc.drain()


async def snapshot(nc) -> dict[str, bytes]:
    return await read_bucket(nc.jetstream(), names.AUTH_SNAPSHOT_BUCKET)


async def stream_messages(nc) -> list[tuple[str, DirectoryEvent]]:
    js = nc.jetstream()
    info = await js.stream_info(names.DIRECTORY_EVENTS_STREAM)
    sub = await js.subscribe(f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.>", ordered_consumer=True)
    found = []
    for _ in range(info.state.messages):
        msg = await sub.next_msg(timeout=5)
        found.append((msg.headers["Nats-Msg-Id"], DirectoryEvent.model_validate_json(msg.data)))
    await sub.unsubscribe()
    return found


async def test_relay_publishes_every_event_once_with_its_notification_id(service, client):
    world = make_world(service.directory)
    value = world.app.issue_token(world.p(world.member), "laptop")["value"]
    total = service.directory.recorder.max_notification_id()
    await wait_until(lambda: service.relay.position == total)
    messages = await stream_messages(client)
    assert [int(mid) for mid, _ in messages] == list(range(1, total + 1))
    assert [e.notification_id for _, e in messages] == list(range(1, total + 1))
    issued = [e for _, e in messages if e.type == "TokenIssued"]
    assert issued[0].actor == world.member and issued[0].data["token_hash"] == hash_token(value, SECRET)
    assert all(value not in e.model_dump_json() for _, e in messages)
    assert all(type(e.payload()).__name__ == e.type and e.version == 1 for _, e in messages)  # typed
    assert {e.actor for _, e in messages} == {"system", world.member}


async def test_relay_survives_the_bus_going_away_and_a_crash(service, bus, client):
    world = make_world(service.directory)
    await wait_until(lambda: service.relay.position == world.events())
    await client.close()
    bus.kill()
    # Commands keep working while the bus is down; their events wait in the store.
    world.app.issue_token(world.p(world.member), "offline")
    world.app.update_org(SYSTEM, world.org, limits={"requests_per_minute": 5})
    await asyncio.sleep(0.5)
    assert service.relay.position < world.events()
    bus.start()  # same port, same store
    await wait_until(lambda: service.relay.position == world.events(), within=20)
    # A crash after publishing but before storing the position republishes; JetStream drops the copies.
    service._positions.set("outbox_relay", 3)
    await service.relay.publish_pending()
    nc = await nats.connect(bus.url)
    try:
        messages = await stream_messages(nc)
    finally:
        await nc.drain()
    assert [e.notification_id for _, e in messages] == list(range(1, world.events() + 1))


async def test_snapshot_holds_effective_grants_routes_and_meta(service, client):
    world = make_world(service.directory)
    app = service.directory
    app.register_endpoint(SYSTEM, "openai", "http://upstream/v1", "openai", "OPENAI_API_KEY")
    app.register_model(SYSTEM, "gpt-4o", "openai")
    app.register_model(SYSTEM, "gpt-4o-mini", "openai", "gpt-4o-mini", 0.15, 0.60, fallbacks=["gpt-4o"])
    app.register_mcp_server(SYSTEM, "search", "http://tools:9000/mcp", [world.team], "SEARCH_KEY")
    value = app.issue_token(world.p(world.member), "t")["value"]
    key = names.snapshot_token_key(hash_token(value, SECRET))
    await wait_until(lambda: service.projector.published.get(key) is not None)
    kv = await snapshot(client)
    grant = TokenGrant.model_validate_json(kv[key])
    assert (grant.user_id, grant.team_id, grant.org_id) == (world.member, world.team, world.org)
    assert grant.limits.requests_per_minute == 60 and grant.allowed_mcp_servers == ["search"]
    model = ModelRoute.model_validate_json(kv[names.snapshot_model_key("gpt-4o-mini")])
    assert (model.input_price_nanos_per_token, model.output_price_nanos_per_token) == (150, 600)
    assert model.fallbacks == ["gpt-4o"]
    mcp = McpServerRoute.model_validate_json(kv[names.snapshot_mcp_key("search")])
    assert (mcp.url, mcp.allowed_team_ids, mcp.api_key_env) == (
        "http://tools:9000/mcp",
        [world.team],
        "SEARCH_KEY",
    )
    endpoint = EndpointRoute.model_validate_json(kv[names.snapshot_endpoint_key("openai")])
    assert endpoint.api_key_env == "OPENAI_API_KEY"
    await wait_until(lambda: service.projector._meta_position == app.state.position)
    meta = SnapshotMeta.model_validate_json((await snapshot(client))[names.SNAPSHOT_META_KEY])
    assert meta.notification_id == app.state.position


async def test_revoked_and_regenerated_tokens_leave_the_snapshot_within_a_second(service, client):
    world = make_world(service.directory)
    app = service.directory
    issued = app.issue_token(world.p(world.member), "t")
    old_key = names.snapshot_token_key(hash_token(issued["value"], SECRET))
    # Watch the bucket the way a proxy does and time how long a change takes to arrive.
    seen: dict[str, bytes | None] = {}
    kv = await client.jetstream().key_value(names.AUTH_SNAPSHOT_BUCKET)
    watcher = await kv.watchall()

    async def follow():
        async for entry in watcher:
            if entry is not None:
                seen[entry.key] = None if entry.operation in ("DEL", "PURGE") else entry.value

    task = asyncio.create_task(follow())
    try:
        await wait_until(lambda: seen.get(old_key) is not None)
        started = time.perf_counter()
        again = app.regenerate_token(world.p(world.member), issued["token"]["id"])
        new_key = names.snapshot_token_key(hash_token(again["value"], SECRET))
        await wait_until(lambda: seen.get(new_key) is not None and old_key in seen and seen[old_key] is None)
        regenerate_seconds = time.perf_counter() - started
        started = time.perf_counter()
        app.revoke_token(world.p(world.member), issued["token"]["id"])
        await wait_until(lambda: new_key in seen and seen[new_key] is None)
        revoke_seconds = time.perf_counter() - started
    finally:
        task.cancel()
        await watcher.stop()
    print(
        f"regenerate reached a watcher in {regenerate_seconds * 1000:.1f} ms, revoke in {revoke_seconds * 1000:.1f} ms"
    )
    assert regenerate_seconds < 1.0 and revoke_seconds < 1.0


async def test_replay_into_empty_projections_reproduces_the_live_snapshot(service, bus, client, tmp_path):
    world = make_world(service.directory)
    app = service.directory
    app.register_endpoint(SYSTEM, "openai", "http://upstream/v1")
    for name in ("a", "b", "c"):
        app.register_model(SYSTEM, name, "openai", input_price_per_million="1.25")
    app.update_org(SYSTEM, world.org, excluded_models=["c"], model_limits={"a": {"requests_per_minute": 1}})
    app.update_team(SYSTEM, world.team, limits={"output_tokens_per_minute": 9})
    app.publish_terms(SYSTEM, "v1", "https://tos.test/v1")
    app.accept_terms(world.p(world.member), "v1")
    t1 = app.issue_token(world.p(world.member), "one")["token"]["id"]
    app.issue_token(world.p(world.team_admin), "two")
    app.regenerate_token(world.p(world.member), t1)
    sa = app.create_service_account(world.p(world.team_admin), world.team, "bot", "runs the nightly jobs")
    app.update_service_account(
        world.p(world.team_admin), sa["service_account"]["id"], owner_user_id=world.member
    )
    gone = app.issue_token(world.p(world.member), "gone")["token"]["id"]
    app.revoke_token(world.p(world.member), gone)
    app.remove_model(SYSTEM, "b")
    app.deactivate_user(SYSTEM, world.outsider)
    await wait_until(lambda: service.projector._meta_position == app.state.position)
    live = await snapshot(client)
    live.pop(names.SNAPSHOT_META_KEY)
    assert len([k for k in live if k.startswith(names.SNAPSHOT_TOKEN_PREFIX)]) == 3
    assert len([k for k in live if k.startswith(names.SNAPSHOT_USER_PREFIX)]) == 4  # the outsider left

    # A second, empty bus: a fresh replay from the event store alone must produce the same snapshot.
    other = EmbeddedNats(tmp_path / "other-nats").start()
    try:
        settings = common_settings(other.url, tmp_path / "data")
        fresh = await bootstrap(DirectorySettings(common=settings))
        await fresh.start()
        await wait_until(fresh.ready)
        nc = await nats.connect(other.url)
        kv = await nc.jetstream().key_value(names.AUTH_SNAPSHOT_BUCKET)
        await kv.put("token.stale", b"{}")  # stale keys the replay must delete
        await kv.put(names.snapshot_user_key("gone"), b"{}")
        result = await fresh.replay()
        replayed = await read_bucket(nc.jetstream(), names.AUTH_SNAPSHOT_BUCKET)
        replayed.pop(names.SNAPSHOT_META_KEY)
        await nc.drain()
        await fresh.stop()
    finally:
        other.stop()
    assert result["events"] == app.state.position
    assert replayed == live


async def test_sign_in_over_request_reply(service, client):
    world = make_world(service.directory)
    reply = await client.request(
        names.DIRECTORY_RPC_SIGN_IN,
        json.dumps(
            {"subject": "oidc:idp:1", "email": "n@acme.test", "name": "N", "groups": ["staff"]}
        ).encode(),
        timeout=5,
    )
    answer = json.loads(reply.data)
    assert answer["org_id"] == world.org and not answer["admin"] and answer["teams"] == []
    reply = await client.request(
        names.DIRECTORY_RPC_SIGN_IN,
        json.dumps({"subject": "oidc:idp:2", "groups": ["nope"]}).encode(),
        timeout=5,
    )
    assert "error" in json.loads(reply.data)
    reply = await client.request(names.DIRECTORY_RPC_SIGN_IN, b"not json", timeout=5)
    assert "error" in json.loads(reply.data)


async def test_two_directory_processes_on_one_store_converge(service, bus, tmp_path):
    import httpx

    # A second process on the same store and bus (what a scale-out on PostgreSQL looks like).
    other = await bootstrap(DirectorySettings(common=common_settings(bus.url, tmp_path / "data")))
    await other.start()
    try:
        world = make_world(service.directory)
        await wait_until(lambda: other.directory.state.position == service.directory.state.position, within=5)
        assert other.directory.state.teams[world.team].name == "research"
        value = other.directory.issue_token(
            other.directory.principal(world.org_admin), "oa", management=True
        )["value"]
        await wait_until(lambda: service.directory.state.position == other.directory.state.position, within=5)
        # Both change the same team before the second one caught up: the later write is refused (409).
        other._follower.cancel()  # hold the second process's read model still for the race
        service.directory.update_team(SYSTEM, world.team, description="first")
        transport = httpx.ASGITransport(app=other.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://directory") as http:
            answer = await http.patch(
                f"/api/teams/{world.team}",
                json={"description": "second"},
                headers={"Authorization": f"Bearer {value}"},
            )
        assert answer.status_code == 409 and answer.json()["code"] == "concurrent_change"
        other.directory.catch_up()
        assert other.directory.state.teams[world.team].description == "first"
    finally:
        await other.stop()
