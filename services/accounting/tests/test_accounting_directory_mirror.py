"""The directory mirror reads the directory's events through their typed models (``aqueduct_libs.
directory_events``), on chDB: every event ever published is stored, in the newest shape of its type;
a type from a newer directory is stored as published; data its model refuses is set aside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.application.directory_mirror import DirectoryMirror
from aqueduct_accounting.settings import default_migrations_dir

pytestmark = pytest.mark.chdb

FIXTURES = Path(__file__).resolve().parents[3] / "libs" / "tests" / "fixtures" / "directory_events"


@pytest.fixture
def mirror(tmp_path: Path):
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    apply_migrations(engine, default_migrations_dir())
    yield DirectoryMirror(AsyncClickHouse(engine)), engine
    engine.close()


def numbered(path: Path, notification_id: int) -> bytes:
    message = json.loads(path.read_text())
    message["notification_id"] = notification_id
    return json.dumps(message).encode()


async def test_every_published_event_is_mirrored_once_in_its_newest_shape(mirror) -> None:
    store, engine = mirror
    fixtures = sorted(FIXTURES.glob("*.json"))
    events = [store.read(numbered(path, n)) for n, path in enumerate(fixtures, start=1)]
    assert await store.store(events) == len(fixtures)
    assert await store.store(events[:3]) == 0  # redelivered: stored once
    rows = engine.query(
        "SELECT notification_id, type, data FROM directory_events ORDER BY notification_id"
    ).rows
    assert [(int(n), t) for n, t, _ in rows] == [(n, e.type) for n, e in enumerate(events, start=1)]
    stored = {path.name: json.loads(data) for path, (_, _, data) in zip(fixtures, rows, strict=True)}
    # The first release's model had no fallbacks: mirrored with the field its type has now.
    assert stored["ModelRegistered.v1.first-release.json"]["fallbacks"] == []
    assert stored["McpServerRegistered.v1.first-release.json"]["api_key_env"] is None
    assert (
        stored["TeamBudgetsSet.v1.json"]["budgets"]
        == json.loads((FIXTURES / "TeamBudgetsSet.v1.json").read_text())["data"]["budgets"]
    )


async def test_an_event_of_a_newer_directory_is_mirrored_as_published(mirror) -> None:
    store, engine = mirror
    message = json.loads((FIXTURES / "TeamCreated.v1.json").read_text())
    newer_type = {**message, "notification_id": 1, "type": "TeamArchived", "data": {"reason": "merged"}}
    newer_version = {**message, "notification_id": 2, "version": 2, "data": {"title": "a v2 field"}}
    events = [store.read(json.dumps(m).encode()) for m in (newer_type, newer_version)]
    assert await store.store(events) == 2
    rows = engine.query("SELECT type, data FROM directory_events ORDER BY notification_id").rows
    assert [(t, json.loads(d)) for t, d in rows] == [
        ("TeamArchived", {"reason": "merged"}),
        ("TeamCreated", {"title": "a v2 field"}),
    ]


def test_data_its_model_refuses_is_a_poison_message(mirror) -> None:
    """The consumer terminates (or dead-letters) a message whose decoding raises ``ValueError``."""
    store, _ = mirror
    message = json.loads((FIXTURES / "MemberAdded.v1.json").read_text())
    message["data"] = {"user_id": "u-1", "joined_at": "not a time"}
    with pytest.raises(ValidationError) as refused:
        store.read(json.dumps(message).encode())
    assert isinstance(refused.value, ValueError) and "joined_at" in str(refused.value)
