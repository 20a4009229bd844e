"""The directory's published events, typed and versioned: every fixture ever published keeps parsing.

``fixtures/directory_events/<Type>.v<version>[.<label>].json`` are envelopes as the directory published
them (``first-release``: by its first release, before the envelope had ``version`` and before models
had ``fallbacks`` and MCP servers ``api_key_env``). They are kept forever: delete none, add one for each
new type or version (the directory's tests write the missing ones).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from aqueduct_libs.directory_events import DIRECTORY_EVENTS, DirectoryEventData, ModelRegistered
from aqueduct_libs.event_versions import EventModel, EventRegistry, UnknownEventError
from aqueduct_libs.events import DirectoryEvent

FIXTURES = Path(__file__).parent / "fixtures" / "directory_events"
CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
BLOCK = re.compile(r"(<!-- directory-events:start[^>]*-->\n)(.*?)(<!-- directory-events:end -->)", re.S)
AGGREGATES = [
    "Org",
    "Team",
    "User",
    "Token",
    "ServiceAccount",
    "Endpoint",
    "Model",
    "McpServer",
    "TermsOfService",
]
FILES = sorted(FIXTURES.glob("*.json"))
NAME = re.compile(r"^(?P<type>[A-Za-z]+)\.v(?P<version>\d+)(\.[a-z0-9-]+)?\.json$")


def envelope(path: Path) -> DirectoryEvent:
    return DirectoryEvent.model_validate_json(path.read_bytes())


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_published_fixture_still_parses_into_its_model(path: Path) -> None:
    named = NAME.match(path.name)
    assert named, f"{path.name}: name it <Type>.v<version>[.<label>].json"
    event = envelope(path)
    assert (event.type, event.version) == (named["type"], int(named["version"]))
    payload = event.payload()
    newest = DIRECTORY_EVENTS.latest(event.type)
    assert type(payload) is newest and payload.aggregate_type == event.aggregate_type
    if event.version == newest.event_version:
        # Within a version, fields are only ever added, with defaults: what was sent reads back as sent.
        dumped = payload.model_dump(mode="json")
        assert {k: dumped[k] for k in event.data if k in dumped} == event.data


def test_every_registered_type_and_version_has_its_fixture() -> None:
    have = {(m["type"], int(m["version"])) for p in FILES if (m := NAME.match(p.name))}
    assert set(DIRECTORY_EVENTS.versions()) <= have
    assert DIRECTORY_EVENTS.check() == []


def test_events_of_the_first_release_read_with_the_fields_added_since() -> None:
    model = envelope(FIXTURES / "ModelRegistered.v1.first-release.json")
    assert "version" not in json.loads((FIXTURES / "ModelRegistered.v1.first-release.json").read_text())
    payload = model.payload()
    assert isinstance(payload, ModelRegistered)
    assert (payload.name, payload.fallbacks, model.version) == ("gpt-4o", [], 1)
    mcp = envelope(FIXTURES / "McpServerRegistered.v1.first-release.json").payload()
    assert mcp.model_dump()["api_key_env"] is None


def test_no_model_has_a_field_for_a_secret() -> None:
    """Token values, passwords and keys never travel in an event; a token is named by its keyed hash
    and preview, an upstream credential by the environment variable holding it."""
    suspicious = re.compile(
        r"secret|password|passwd|private|credential|(^|_)value$|(^|_)key$|api_key(?!_env)"
    )
    for event_type, version in DIRECTORY_EVENTS.versions():
        model = DIRECTORY_EVENTS.model_of(event_type, version)
        assert [f for f in model.model_fields if suspicious.search(f)] == [], event_type
    for path in FILES:
        assert not re.search(r'"aq-[A-Za-z0-9_-]{20,}"', path.read_text()), path.name  # a token value


def test_an_unknown_type_or_a_newer_version_is_reported_not_guessed() -> None:
    event = envelope(FIXTURES / "TeamCreated.v1.json")
    with pytest.raises(UnknownEventError, match="no model for event type 'TeamCloned'"):
        event.model_copy(update={"type": "TeamCloned"}).payload()
    with pytest.raises(UnknownEventError, match="reads up to v1"):
        event.model_copy(update={"version": 2}).payload()
    with pytest.raises(ValidationError):
        event.model_copy(update={"data": {"name": "no org id"}}).payload()


def contract_table() -> str:
    rows = []
    for event_type, version in DIRECTORY_EVENTS.versions():
        model = DIRECTORY_EVENTS.model_of(event_type, version)
        assert issubclass(model, DirectoryEventData)
        fields = ", ".join(f"`{n}`" + ("" if f.is_required() else "?") for n, f in model.model_fields.items())
        rows.append(
            (AGGREGATES.index(model.aggregate_type), model.aggregate_type, event_type, version, fields)
        )
    lines = ["| aggregate | type | version | fields (`?`: optional) |", "|---|---|---|---|"]
    lines += [f"| {a} | `{t}` | {v} | {f or 'none'} |" for _, a, t, v, f in sorted(rows)]
    return "\n".join(lines) + "\n"


def test_the_contracts_page_lists_every_event_type_and_version() -> None:
    """``docs/contracts.md`` shows the models as they are (``AQUEDUCT_WRITE_EVENT_FIXTURES=1`` rewrites it)."""
    text = CONTRACTS.read_text()
    found = BLOCK.search(text)
    assert found, "docs/contracts.md lost its directory-events block"
    if found[2] != contract_table() and os.environ.get("AQUEDUCT_WRITE_EVENT_FIXTURES") == "1":
        CONTRACTS.write_text(text[: found.start(2)] + contract_table() + text[found.end(2) :])
    else:
        assert found[2] == contract_table()


# -- the upcasting mechanism, on a registry of its own ---------------------------------------------
# No directory event has needed a second version yet (what changed was added within v1, as optional
# fields). This is how the first one will be made, and what the fixtures of v1 then go through.


def test_a_new_version_reads_every_older_one_through_its_upcasters() -> None:
    registry = EventRegistry()

    @registry.model
    class BudgetSetV1(EventModel):
        event_type: ClassVar[str] = "BudgetSet"
        usd: str  # "12.50"

    @registry.model
    class BudgetSetV2(EventModel):
        event_type: ClassVar[str] = "BudgetSet"
        event_version: ClassVar[int] = 2
        nanos: int  # a breaking change: a new version

    @registry.model
    class BudgetSetV3(EventModel):
        event_type: ClassVar[str] = "BudgetSet"
        event_version: ClassVar[int] = 3
        limit_nanos: int
        period: str = "month"

    assert registry.check() == ["BudgetSet v1 has no upcaster to v2", "BudgetSet v2 has no upcaster to v3"]

    @registry.upcaster("BudgetSet", 1)
    def dollars_to_nanos(data: dict[str, Any]) -> dict[str, Any]:
        return {"nanos": int(float(data["usd"]) * 1_000_000_000)}

    @registry.upcaster("BudgetSet", 2)
    def renamed(data: dict[str, Any]) -> dict[str, Any]:
        return {"limit_nanos": data["nanos"]}

    assert registry.check() == []
    assert registry.parse("BudgetSet", 1, {"usd": "12.50"}) == BudgetSetV3(limit_nanos=12_500_000_000)
    assert registry.parse("BudgetSet", 2, {"nanos": 7}) == BudgetSetV3(limit_nanos=7)
    assert registry.parse("BudgetSet", 3, {"limit_nanos": 7, "period": "day", "new": 1}).period == "day"
    with pytest.raises(ValidationError):  # bad data is reported against the version it claims
        registry.parse("BudgetSet", 1, {"nanos": 7})
    with pytest.raises(ValueError, match="already registered"):
        registry.model(BudgetSetV1)


def test_a_version_without_a_model_between_is_caught() -> None:
    registry = EventRegistry()

    @registry.model
    class Gap(EventModel):
        event_version: ClassVar[int] = 2

    assert registry.check() == ["Gap has versions [2]: each from 1 to the newest needs a model"]
    assert issubclass(DirectoryEventData, EventModel)
