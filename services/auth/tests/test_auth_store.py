"""The auth store on both engines: SQLite (embedded default) and PostgreSQL (scale-out)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, sign_in

from aqueduct_auth.adapters.store import AuthStore, LocalAccount

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"aqueduct_auth_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'auth.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


def test_accounts_sessions_and_spend_once_tokens(store_url: str) -> None:
    store = AuthStore(store_url)
    try:
        account = LocalAccount(f"u-{uuid.uuid4().hex[:6]}", "hash", admin=True, groups=["staff"])
        assert store.add_account(account, 1.0) is True
        assert store.add_account(account, 2.0) is False
        assert store.get_account(account.username) == account
        assert store.get_account("missing") is None

        session_id = uuid.uuid4().hex
        store.add_session(session_id, {"subject": "local:x"}, 1.0)
        store.add_refresh_token(f"h-{session_id}", session_id, 100.0)
        found = store.find_refresh_token(f"h-{session_id}")
        assert found is not None and found.used_at is None and found.sign_in == {"subject": "local:x"}
        assert store.spend_refresh_token(f"h-{session_id}", 5.0) is True
        assert store.spend_refresh_token(f"h-{session_id}", 6.0) is False
        store.revoke_session(session_id, 7.0)
        revoked = store.find_refresh_token(f"h-{session_id}")
        assert revoked is not None and revoked.used_at == 5.0 and revoked.session_revoked

        store.add_exchange_code(f"c-{session_id}", session_id, 50.0, "b" * 64)
        store.purge_expired(60.0)
        assert store.find_exchange_code(f"c-{session_id}") is None

        # A live session (its refresh token not expired yet) is kept; a revoked one goes after a day.
        live = uuid.uuid4().hex
        store.add_session(live, {"subject": "local:y"}, 1.0)
        store.add_refresh_token(f"h-{live}", live, 10 * 86400.0)
        store.purge_expired(3 * 86400.0)
        assert store.find_refresh_token(f"h-{live}") is not None
        store.revoke_session(live, 3 * 86400.0)
        store.purge_expired(3 * 86400.0)
        assert store.find_refresh_token(f"h-{live}") is None
    finally:
        store.close()


async def test_concurrent_refreshes_of_one_token_let_exactly_one_through(store_url: str) -> None:
    store = AuthStore(store_url)
    try:
        session_id = uuid.uuid4().hex
        store.add_session(session_id, {}, 1.0)
        store.add_refresh_token("race", session_id, 100.0)
        wins = await asyncio.gather(
            *(asyncio.to_thread(store.spend_refresh_token, "race", 2.0) for _ in range(8))
        )
        assert sum(wins) == 1
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.nats
async def test_the_service_signs_in_on_postgresql(auth_client, postgres_url: str) -> None:
    async with auth_client(database_url=postgres_url) as client:
        pair = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        refreshed = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 200
