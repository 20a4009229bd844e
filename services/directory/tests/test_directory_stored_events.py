"""Stored events are kept forever: what older versions of the directory recorded must still replay.

``fixtures/stored_events/`` holds event stores as older versions wrote them (topic, state, as in the
database). Each is loaded into a fresh store and replayed by today's code, so a stored event class that
changes shape without ``class_version`` and an upcaster, or is renamed or moved without keeping its old
topic (``register_topic``), fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest
from directory_testkit import make_app
from event_samples import one_of_each
from eventsourcing.persistence import StoredEvent

from aqueduct_directory.application.translate import to_integration_event

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
