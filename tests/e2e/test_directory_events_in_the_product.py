"""The directory's typed events in the launched product: what an Admin does from the CLI reaches the
audit copy in ClickHouse (``aqueduct sql``) as the versioned models of ``aqueduct_libs.directory_events``,
with no token value anywhere."""

from __future__ import annotations

import json
import time

import pytest

from aqueduct_libs.directory_events import DIRECTORY_EVENTS
from aqueduct_libs.events import DirectoryEvent
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _rows(stack: Stack, query: str) -> list[dict]:
    return json.loads(stack.cli("sql", query, "--format", "json").stdout)


def test_admin_changes_reach_the_audit_copy_as_typed_events(stack: Stack) -> None:
    stack.login_admin()
    org = json.loads(stack.cli("orgs", "create", "chemistry", "--rpm", "20").stdout)
    value = stack.cli("tokens", "create", "--name", "typed-events", "--quiet").stdout.strip()
    assert value.startswith("aq-")
    query = (
        "SELECT notification_id, type, aggregate_type, aggregate_id, aggregate_version, actor, "
        "occurred_at, data FROM directory_events ORDER BY notification_id"
    )
    deadline = time.monotonic() + 60  # the relay and accounting's consumer, on a loaded machine
    rows = _rows(stack, query)
    while not {"OrgCreated", "TokenIssued"} <= {r["type"] for r in rows if r["type"]}:
        assert time.monotonic() < deadline, f"not mirrored: {[r['type'] for r in rows]}"
        time.sleep(0.5)
        rows = _rows(stack, query)
    for row in rows:
        event = DirectoryEvent.model_validate(
            {
                **row,
                "occurred_at": row["occurred_at"].replace(" ", "T") + "Z",
                "data": json.loads(row["data"]),
            }
        )
        payload = event.payload()  # every mirrored event reads as its newest typed model
        assert type(payload) is DIRECTORY_EVENTS.latest(event.type)
        assert payload.aggregate_type == event.aggregate_type
    created = next(r for r in rows if r["type"] == "OrgCreated" and r["aggregate_id"] == org["id"])
    assert json.loads(created["data"])["limits"] == {"requests_per_minute": 20}
    assert value not in json.dumps(rows)
