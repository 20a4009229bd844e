"""Each service is its own NATS user: a compromised proxy or UI process cannot mint tokens (auth snapshot),
forge sessions (signing keys), lift budgets (quota) or speak for the directory.

The credentials are the ones ``aqueduct up`` made and handed to its services; the refusals come from the
running NATS server (a permissions violation), not from our code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from aqueduct_cli.nats_users import GRANTS, compose_config
from aqueduct_libs import bus, names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.events import UsageRecorded
from aqueduct_libs.sessions import JWKS_KEY
from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
NATS_URL = re.compile(r"nats://(?P<user>[^:@/]+):(?P<password>[^@]+)@(?P<host>[^:]+):(?P<port>\d+)")


def test_the_compose_nats_config_is_the_one_the_grants_describe() -> None:
    assert (ROOT / "infra" / "nats" / "nats.conf").read_text() == compose_config(), (
        "infra/nats/nats.conf is stale: python -m aqueduct_cli.nats_users > infra/nats/nats.conf"
    )


def _address(stack: Stack) -> tuple[str, int]:
    runtime = json.loads((stack.data_dir / "runtime.json").read_text())
    match = re.fullmatch(r"nats://([^:@/]+):(\d+)", runtime["nats_url"])
    assert match, f"runtime.json must name the bus without credentials, not {runtime['nats_url']!r}"
    return match.group(1), int(match.group(2))


def _password(stack: Stack, service: str) -> str:
    return str(json.loads((stack.data_dir / "nats" / "users.json").read_text())[service])


@asynccontextmanager
async def _connect_as(stack: Stack, service: str, refusals: list[str]) -> AsyncIterator[NATS]:
    host, port = _address(stack)

    async def on_error(error: Exception) -> None:
        refusals.append(str(error).lower())

    nc = await nats.connect(
        f"nats://{service}:{_password(stack, service)}@{host}:{port}",
        name=f"permission-probe-{service}",
        inbox_prefix=names.inbox_prefix(service),  # as aqueduct_libs.bus.connect does
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        yield nc
    finally:
        await nc.close()


async def _refused(nc: NATS, subject: str, payload: bytes, refusals: list[str]) -> bool:
    """Publish as a JetStream client would (waiting for the stream's ack); True if the server refused."""
    js = nc.jetstream(timeout=1.5)
    try:
        await js.publish(subject, payload)
    except nats.errors.TimeoutError:  # a refused publish is dropped: no stream ever answers
        pass
    else:
        return False
    await nc.flush()
    return any(f'permissions violation for publish to "{subject.lower()}"' in r for r in refusals)


def _usage_event() -> bytes:
    return (
        UsageRecorded(
            token_id="permission-probe",
            user_id="permission-probe",
            org_id="permission-probe",
            endpoint="fake",
            model="fake-model",
            route="/v1/chat/completions",
            status_code=200,
        )
        .model_dump_json()
        .encode()
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_the_launcher_keeps_one_owner_only_password_per_service(stack: Stack) -> None:
    users = stack.data_dir / "nats" / "users.json"
    assert set(json.loads(users.read_text())) == set(GRANTS)
    for private in (users, stack.data_dir / "nats" / "auth.conf"):
        assert private.stat().st_mode & 0o077 == 0, f"{private} is readable by others"
    passwords = set(json.loads(users.read_text()).values())
    assert len(passwords) == len(GRANTS), "every service has a password of its own"
    # The product's own traffic never runs into a refusal. Expected: at the first start, a service that
    # checks the topology before the directory created it tries to create a stream and is refused.
    log = (stack.data_dir / "logs" / "nats.log").read_text(errors="replace")
    unexpected = [
        line
        for line in log.splitlines()
        if "Violation" in line and "permission-probe" not in line and "$JS.API.STREAM.CREATE." not in line
    ]
    assert not unexpected


@pytest.mark.e2e
@pytest.mark.slow
async def test_without_credentials_the_bus_is_closed(stack: Stack) -> None:
    host, port = _address(stack)
    with pytest.raises(nats.errors.Error, match="Authorization"):
        await nats.connect(f"nats://{host}:{port}", allow_reconnect=False, connect_timeout=2)
    with pytest.raises(nats.errors.Error, match="Authorization"):
        await nats.connect(
            f"nats://proxy:{_password(stack, 'ui')}@{host}:{port}", allow_reconnect=False, connect_timeout=2
        )


PROTECTED = [
    pytest.param(
        f"$KV.{names.AUTH_SNAPSHOT_BUCKET}.{names.snapshot_token_key('minted')}", id="auth-snapshot"
    ),
    # The snapshot's changes pushed as plain messages grant access as the bucket does (minting a token).
    pytest.param(names.snapshot_push_subject(names.snapshot_token_key("minted")), id="snapshot-push"),
    pytest.param(f"$KV.{names.AUTH_KEYS_BUCKET}.{JWKS_KEY}", id="signing-keys"),
    pytest.param(f"$KV.{names.AUTH_REVOKED_BUCKET}.some-session", id="ended-sessions"),
    pytest.param(f"$KV.{names.QUOTA_BUCKET}.user.someone", id="quota"),
    pytest.param(names.directory_event_subject("UserCreated"), id="directory-event"),
    pytest.param(names.auth_event_subject("SignedIn"), id="auth-event"),
]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("service", ["proxy", "batch-worker", "ui"])
@pytest.mark.parametrize("subject", PROTECTED)
async def test_the_trust_root_is_refused_to_proxy_worker_and_ui(
    stack: Stack, service: str, subject: str
) -> None:
    refusals: list[str] = []
    async with _connect_as(stack, service, refusals) as nc:
        assert await _refused(nc, subject, b'{"forged": true}', refusals), refusals


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("service", ["proxy", "ui"])
async def test_nobody_but_the_directory_answers_or_sends_a_sign_in(stack: Stack, service: str) -> None:
    refusals: list[str] = []
    async with _connect_as(stack, service, refusals) as nc:
        await nc.subscribe(names.DIRECTORY_RPC_SIGN_IN, queue="directory")
        await nc.publish(names.DIRECTORY_RPC_SIGN_IN, b"{}")
        await nc.flush()
        await nc.flush()  # the refusals arrive after the server read the commands
    subject = names.DIRECTORY_RPC_SIGN_IN
    assert any(f'permissions violation for subscription to "{subject}"' in r for r in refusals), refusals
    assert any(f'permissions violation for publish to "{subject}"' in r for r in refusals), refusals


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("service", ["proxy", "ui", "batch-worker"])
async def test_a_service_reads_only_its_own_replies(stack: Stack, service: str) -> None:
    """Replies (the sign-in answer, JetStream answers) go to the requester's own inbox prefix: another
    service may not subscribe there."""
    refusals: list[str] = []
    async with _connect_as(stack, service, refusals) as nc:
        for other in ("auth", "directory", "_INBOX"):
            await nc.subscribe(
                f"{names.inbox_prefix(None) if other == '_INBOX' else names.inbox_prefix(other)}.>"
            )
        await nc.subscribe(f"{names.inbox_prefix(service)}.probe")  # its own: allowed
        await nc.flush()
        await nc.flush()
    for prefix in ("_INBOX_auth", "_INBOX_directory", "_INBOX"):
        wanted = f'permissions violation for subscription to "{prefix}.>"'.lower()  # refusals are lowercased
        assert any(wanted in r for r in refusals), refusals
    assert not any(f"{names.inbox_prefix(service)}.probe".lower() in r for r in refusals), refusals


@pytest.mark.e2e
@pytest.mark.slow
async def test_the_proxy_publishes_usage_and_reads_what_it_watches(stack: Stack) -> None:
    refusals: list[str] = []
    async with _connect_as(stack, "proxy", refusals) as nc:
        js = nc.jetstream(timeout=5)
        ack = await js.publish(names.USAGE_SUBJECT, _usage_event())
        assert ack.stream == names.USAGE_STREAM
        snapshot = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        meta = await snapshot.get(names.SNAPSHOT_META_KEY)
        assert meta.value and b"notification_id" in meta.value
        quota = await js.key_value(names.QUOTA_BUCKET)
        with pytest.raises(KeyNotFoundError):  # an answer (the key is not there), not a refusal (timeout)
            await quota.get("user.permission-probe")
        # It follows the snapshot changes the directory pushes, and may change the replicas of its own
        # stores, but not of the directory's streams.
        await nc.subscribe(f"{names.SNAPSHOT_PUSH_PREFIX}.>")
        info = await js.stream_info(names.BATCH_LINES_STREAM)
        assert (await js.update_stream(info.config)).config.name == names.BATCH_LINES_STREAM
        with pytest.raises(nats.errors.TimeoutError):
            await js.update_stream((await js.stream_info(names.USAGE_STREAM)).config)
        # Stream administration stays with nobody: not even the proxy's own work queue may be deleted.
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream(names.USAGE_STREAM)
        await nc.flush()
    assert refusals == [
        f'nats: permissions violation for publish to "$js.api.stream.update.{names.USAGE_STREAM.lower()}"',
        f'nats: permissions violation for publish to "$js.api.stream.delete.{names.USAGE_STREAM.lower()}"',
    ]


@pytest.mark.e2e
@pytest.mark.slow
async def test_the_ui_reads_the_signing_keys_and_may_publish_nothing(stack: Stack) -> None:
    refusals: list[str] = []
    async with _connect_as(stack, "ui", refusals) as nc:
        keys = await nc.jetstream(timeout=5).key_value(names.AUTH_KEYS_BUCKET)
        jwks = json.loads((await keys.get(JWKS_KEY)).value or b"{}")
        assert jwks["keys"], "the UI can read the public signing keys"
        assert await _refused(nc, names.USAGE_SUBJECT, _usage_event(), refusals), refusals


@pytest.mark.e2e
@pytest.mark.slow
async def test_a_service_trying_to_create_a_stream_it_may_not_logs_no_warning(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Every service tries to create the shared streams at start; only the directory may. A service that
    starts first (the UI before the directory) is refused by the server and waits: expected, so neither
    the nats-py connection (the UI's) nor FastStream's broker (the proxy's) logs it as a problem."""
    host, port = _address(stack)
    caplog.set_level(logging.DEBUG)
    ui = await bus.connect(f"nats://ui:{_password(stack, 'ui')}@{host}:{port}", "permission-probe-ui")
    broker = new_broker(f"nats://proxy:{_password(stack, 'proxy')}@{host}:{port}", "permission-probe-proxy")
    await broker.start()
    try:
        for nc in (ui, broker.connection):
            with pytest.raises(nats.errors.TimeoutError):  # refused: nothing answers
                await nc.jetstream(timeout=1).add_stream(
                    name=names.DIRECTORY_EVENTS_STREAM,
                    subjects=[f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.>"],
                )
            await nc.flush()
        await asyncio.sleep(0.3)
    finally:
        await broker.stop()
        await ui.close()
    said = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if "permissions violation" in r.getMessage().lower()
    ]
    assert not [text for level, text in said if level >= logging.WARNING], said
    assert any(level == logging.DEBUG for level, _ in said), (
        f"the UI's refusal is logged at debug level: {said}"
    )
