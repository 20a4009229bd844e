"""The duplicate check of events older than the ids kept in memory (one query with every id of the batch):
ids and orgs with quotes, backslashes, tabs, new lines and backticks are found exactly, on chDB through the
one clickhouse-connect adapter; and the ids' text (a JSON array in a string parameter) is the text
clickhouse-connect itself would send for that string."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from clickhouse_connect.driver.binding import format_bind_value

from aqueduct_accounting.adapters.clickhouse import (
    AsyncClickHouse,
    ClickHouse,
    JsonStrings,
    StringArray,
    embedded_dsn,
)
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.usage import usage_row
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_libs.events import UsageRecorded

pytestmark = [pytest.mark.chdb]

HOSTILE = ["plain", "it's", "back\\slash", "tab\there", "new\nline", "tick`", "\\'", "', 'x", "ünï", "end\\"]


def test_the_array_literal_is_clickhouse_connects_own() -> None:
    for values in (HOSTILE, [], [""], ["\\" * 5, "'" * 3]):
        assert str(StringArray(values)) == format_bind_value(values, None, True)
        assert str(JsonStrings(values)) == format_bind_value(orjson.dumps(values).decode(), None, True)


def _event(event_id: str, org_id: str, when: datetime) -> UsageRecorded:
    return UsageRecorded(
        event_id=event_id,
        occurred_at=when,
        token_id="tok",
        user_id="user",
        org_id=org_id,
        endpoint="local",
        model="local-llama",
        route="/v1/chat/completions",
        status_code=200,
    )


async def test_hostile_ids_of_old_events_are_found_exactly(tmp_path: Path) -> None:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        apply_migrations(engine, default_migrations_dir())
        ingest = UsageIngest(AsyncClickHouse(engine), PriceBook({}), window_seconds=60)
        when = datetime.now(UTC) - timedelta(days=1)  # older than the ids kept in memory
        stored = [_event(f"ev-{name}", f"org-{name}", when) for name in HOSTILE]
        assert (await ingest.ingest(stored)).inserted == len(HOSTILE)

        near_misses = [_event(f"ev-{name}x", f"org-{name}", when) for name in HOSTILE]
        rows = [usage_row(event) for event in stored + near_misses]
        assert await ingest.existing_ids(rows) == {event.event_id for event in stored}

        again = await ingest.ingest(stored + near_misses)  # a redelivery with new events among them
        assert (again.inserted, again.duplicates) == (len(HOSTILE), len(HOSTILE))
        assert engine.query("SELECT count() FROM usage_events").rows[0][0] == 2 * len(HOSTILE)
    finally:
        engine.close()
