"""Stored events are kept forever: what older versions of the directory recorded must still replay.

``fixtures/stored_events/`` holds event stores as older versions wrote them (topic, state, as in the
database). Each is loaded into a fresh store and replayed by today's code, so a stored event class that
changes shape without ``class_version`` and an upcaster, or is renamed or moved without keeping its old
topic (``register_topic``), fails here.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from directory_testkit import make_app
from event_samples import one_of_each
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import TopicError

from aqueduct_directory.application.translate import to_integration_event
from aqueduct_directory.domain import Endpoint
from aqueduct_directory.domain.topics import keep_old_topics

FIXTURES = Path(__file__).parent / "fixtures" / "stored_events"
STORES = sorted(FIXTURES.glob("*.json"))


def load_store(app, fixture: Path) -> list[dict]:
    events = json.loads(fixture.read_text())["events"]
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=UUID(e["originator_id"]),
                originator_version=e["originator_version"],
                topic=e["topic"],
                state=json.dumps(e["state"], separators=(",", ":")).encode(),
            )
            for e in events
        ]
    )
    return events


@pytest.mark.parametrize("fixture", STORES, ids=[p.stem for p in STORES])
def test_an_old_event_store_replays_and_publishes(fixture, tmp_path):
    seed = make_app(tmp_path)
    events = load_store(seed, fixture)
    app = make_app(tmp_path)  # a restart: folds every stored event
    assert app.state.position == len(events)
    replayed = list(app.iter_events())
    assert [type(e).__qualname__.split(".")[-1] for _, e in replayed] == [
        e["topic"].rsplit(".", 1)[-1] for e in events
    ]
    # Each one still translates into its public model, which parses back.
    for notification_id, domain_event in replayed:
        published = to_integration_event(domain_event, notification_id)
        assert published.payload().model_dump(mode="json") == published.data


def test_models_and_mcp_servers_recorded_before_their_new_fields_replay_with_the_defaults(tmp_path):
    """Model events gained ``fallbacks`` and MCP server events ``api_key_env`` after the first release
    (``class_version`` 2, upcast from 1)."""
    seed = make_app(tmp_path)
    load_store(seed, FIXTURES / "2026-11-22-first-release.json")
    app = make_app(tmp_path)
    gpt = app.state.models["gpt-4o"]
    assert (gpt.upstream_model, gpt.output_price_per_million, gpt.fallbacks) == (
        "gpt-4o-2024-08-06",
        "12",
        [],
    )
    assert app.state.models["mini"].deleted
    search = app.state.mcp_servers["search"]
    assert (search.url, search.api_key_env) == ("https://mcp.acme.test/v2/mcp", None)
    # Recorded anew, the same events carry their class version, so they are never upcast twice.
    model = app.editable(gpt)
    model.update("openai", "gpt-4o", "2.5", "12", ["mini"], actor="system")
    app.commit(model)
    assert make_app(tmp_path).state.models["gpt-4o"].fallbacks == ["mini"]


def test_every_stored_event_of_today_replays_through_the_store(tmp_path):
    """One of every event class, written by today's mapper and read back (class versions and topics
    included), folds into the same aggregates as the events themselves."""
    app = make_app(tmp_path)
    events = one_of_each()
    stored = [app.mapper.to_stored_event(e) for e in events]
    read = [app.mapper.to_domain_event(s) for s in stored]
    assert [vars(e) for e in read] == [vars(e) for e in events]
    versions = {
        type(e).__qualname__: json.loads(s.state).get("class_version", 1)
        for e, s in zip(events, stored, strict=True)
    }
    assert versions["Model.ModelRegistered"] == versions["McpServer.McpServerUpdated"] == 2


def test_every_stored_event_class_and_version_of_today_has_a_fixture(tmp_path):
    """So a class renamed, moved or changed later is caught by the replay above. Missing ones are
    written, as one new store, with ``AQUEDUCT_WRITE_EVENT_FIXTURES=1``."""
    app = make_app(tmp_path)
    kept = {
        (e["topic"], e["state"].get("class_version", 1))
        for fixture in STORES
        for e in json.loads(fixture.read_text())["events"]
    }
    events = one_of_each()
    app.save(*_aggregates_of(events))
    today = [
        {
            "id": n.id,
            "originator_id": str(n.originator_id),
            "originator_version": n.originator_version,
            "topic": n.topic,
            "state": json.loads(n.state),
        }
        for n in app.recorder.select_notifications(start=1, limit=1000)
    ]
    missing = sorted({(e["topic"], e["state"].get("class_version", 1)) for e in today} - kept)
    if missing and os.environ.get("AQUEDUCT_WRITE_EVENT_FIXTURES") == "1":
        day, n = f"{datetime.now(UTC):%Y-%m-%d}", 1
        path = FIXTURES / f"{day}-every-event.json"
        while path.exists():  # never overwritten
            n += 1
            path = FIXTURES / f"{day}-every-event-{n}.json"
        note = "one of every stored event class (event_samples.one_of_each), recorded by the code of that day"
        path.write_text(
            json.dumps({"recorded_by": note, "events": today}, indent=1, ensure_ascii=False) + "\n"
        )
        missing = []
    assert missing == [], f"no stored fixture of {missing}; AQUEDUCT_WRITE_EVENT_FIXTURES=1 writes one"


def _aggregates_of(events: list) -> list:
    """The aggregates the events make, with the events pending, to save them as commands would."""
    by_id: dict = {}
    for event in events:
        by_id.setdefault(event.originator_id, []).append(event)
    aggregates = []
    for stream in by_id.values():
        aggregate = None
        for event in stream:
            aggregate = event.mutate(aggregate)
        aggregate._pending_events.extend(stream)
        aggregates.append(aggregate)
    return aggregates


def test_a_renamed_class_replays_once_its_old_topic_is_kept(tmp_path):
    """As if ``Endpoint`` had been called ``Upstream`` in module ``aqueduct_directory.domain.upstreams``
    when the first release recorded its events."""
    old = "aqueduct_directory.domain.upstreams:Upstream"
    events = json.loads((FIXTURES / "2026-11-22-first-release.json").read_text())["events"]
    for e in events:
        e["topic"] = e["topic"].replace("aqueduct_directory.domain.catalog:Endpoint", old)
        if e["state"].get("originator_topic") == "aqueduct_directory.domain.catalog:Endpoint":
            e["state"]["originator_topic"] = old
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps({"events": events}))
    load_store(make_app(tmp_path), renamed)
    with pytest.raises(TopicError, match="upstreams"):
        make_app(tmp_path)
    keep_old_topics({old: Endpoint})
    assert make_app(tmp_path).state.endpoints["openai"].url == "https://api.openai.com/v1/"
