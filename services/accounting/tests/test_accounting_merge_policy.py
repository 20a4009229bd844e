"""usage_events' merge policy: a steady stream's small parts are not merged again and again into the rest of
a small partition (the engine's default merges the whole month after every fifth insert while it is under
about 5 MiB). Set at every start, kept for a table created again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aqueduct_accounting.adapters.clickhouse import ClickHouse, embedded_dsn
from aqueduct_accounting.application.self_repair import MERGE_SELECTOR_BASE, migrate_and_repair
from aqueduct_accounting.settings import default_migrations_dir

pytestmark = [pytest.mark.chdb]

_BIG = 50_000


def _rows(first: int, count: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"e-{i:07d}",
            "occurred_at": "2026-06-01 10:00:00.000",
            "org_id": "o",
            "input_tokens": i % 500,
            "status_code": 200,
        }
        for i in range(first, first + count)
    ]


def _active_parts(engine: ClickHouse) -> list[int]:
    rows = engine.query(
        "SELECT rows FROM system.parts WHERE database = currentDatabase() AND table = 'usage_events' "
        "AND active ORDER BY min_block_number"
    ).rows
    return [int(r[0]) for r in rows]


def _merges_done(engine: ClickHouse) -> None:
    """Wait until the engine has chosen and finished the merges it wants (none running for a while)."""
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = engine.query(
            "SELECT count() FROM system.merges WHERE database = currentDatabase() AND table = 'usage_events'"
        ).rows[0][0]
        if running:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 3.0:
            return
        time.sleep(0.2)


def _small_inserts_after_a_big_one(engine: ClickHouse, small: int) -> list[int]:
    engine.insert_json_rows("usage_events", _rows(0, _BIG), dedup_token="big")
    _merges_done(engine)
    for n in range(small):
        engine.insert_json_rows("usage_events", _rows(_BIG + n * 50, 50), dedup_token=f"small-{n}")
        time.sleep(0.1)
    _merges_done(engine)
    return _active_parts(engine)


def test_a_steady_streams_small_parts_leave_the_partitions_bulk_alone(tmp_path: Path) -> None:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        migrate_and_repair(engine, default_migrations_dir())
        parts = _small_inserts_after_a_big_one(engine, 12)
        assert sum(parts) == _BIG + 12 * 50
        assert _BIG in parts  # 50,000 rows not rewritten for 600 more
    finally:
        engine.close()


def test_the_engines_default_would_rewrite_them(tmp_path: Path) -> None:
    """The reference: without the setting, the same inserts merge the 50,000 rows again (what the policy
    is for; if an engine stops doing this, the setting may go)."""
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        migrate_and_repair(engine, default_migrations_dir(), merge_selector_base=None)
        parts = _small_inserts_after_a_big_one(engine, 12)
        assert sum(parts) == _BIG + 12 * 50
        assert _BIG not in parts
    finally:
        engine.close()


def test_the_policy_is_set_at_every_start_and_on_a_table_created_again(tmp_path: Path) -> None:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))

    def base() -> str:
        create = engine.query("SHOW CREATE TABLE usage_events").rows[0][0]
        return (
            create.split("merge_selector_base = ", 1)[1].split(",")[0].split()[0]
            if ("merge_selector_base" in create)
            else ""
        )

    try:
        migrate_and_repair(engine, default_migrations_dir())
        assert float(base()) == MERGE_SELECTOR_BASE
        engine.execute("DROP TABLE usage_events")
        repair = migrate_and_repair(engine, default_migrations_dir())
        assert "usage_events" in repair.created
        assert float(base()) == MERGE_SELECTOR_BASE
        migrate_and_repair(engine, default_migrations_dir(), merge_selector_base=7)
        assert float(base()) == 7
        # 0 in the settings (None here): back to the engine's own default, not the last value kept.
        migrate_and_repair(engine, default_migrations_dir(), merge_selector_base=None)
        assert base() == ""
    finally:
        engine.close()


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1", "1000", "twenty"])
def test_a_merge_policy_out_of_range_stops_the_start_with_its_name(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from aqueduct_accounting.settings import AccountingSettings

    monkeypatch.setenv("AQUEDUCT_ACCOUNTING_MERGE_SELECTOR_BASE", value)
    with pytest.raises(ValidationError, match="merge_selector_base"):
        AccountingSettings()


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("2", 2.0), ("20", 20.0), ("100", 100.0)])
def test_a_merge_policy_in_range_is_taken(
    value: str, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqueduct_accounting.settings import AccountingSettings

    monkeypatch.setenv("AQUEDUCT_ACCOUNTING_MERGE_SELECTOR_BASE", value)
    assert AccountingSettings().merge_selector_base == expected
