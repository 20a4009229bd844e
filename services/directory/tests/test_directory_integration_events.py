"""The public contract of the directory's events: every stored event class is translated explicitly into
its model in ``aqueduct_libs.directory_events``, and every type and version it publishes has a fixture.

A missing fixture fails the test; ``AQUEDUCT_WRITE_EVENT_FIXTURES=1`` writes the missing ones (never
overwrites one: published fixtures are kept forever) from ``event_samples.one_of_each()``.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
from event_samples import one_of_each, stored_event_classes

from aqueduct_directory.application.translate import (
    TRANSLATIONS,
    UntranslatedEventError,
    to_integration_event,
    to_plain,
)
from aqueduct_directory.domain import Org
from aqueduct_libs.directory_events import DIRECTORY_EVENTS
from aqueduct_libs.events import DirectoryEvent

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "libs" / "tests" / "fixtures" / "directory_events"
# The library's bookkeeping and the actor: the envelope's, never the payload's.
ENVELOPE = {"originator_id", "originator_version", "originator_topic", "timestamp", "actor"}


def published() -> list[tuple[Any, DirectoryEvent]]:
    return [(e, to_integration_event(e, n)) for n, e in enumerate(one_of_each(), start=1)]


def domain_fields(event_class: type) -> set[str]:
    """The fields the domain gave the class (the library's own base classes left out)."""
    fields: set[str] = set()
    for klass in event_class.__mro__:
        if klass.__module__.startswith("aqueduct_directory."):
            fields.update(inspect.get_annotations(klass))
    return fields - ENVELOPE


def test_every_stored_event_class_has_a_translation_and_a_sample():
    classes = stored_event_classes()
    untranslated = sorted(name for name, cls in classes.items() if cls not in TRANSLATIONS)
    assert untranslated == [], f"stored events without a public translation: {untranslated}"
    assert set(TRANSLATIONS) == set(classes.values())  # and no translation of a class that is gone
    sampled = {type(e).__qualname__ for e in one_of_each()}
    assert sampled == set(classes), f"event_samples.one_of_each() misses {sorted(set(classes) - sampled)}"


def test_an_event_class_without_a_translation_is_never_published():
    class OrgRenamedSecretly(Org.Event):
        name: str

    stray = OrgRenamedSecretly(originator_id=Org.create_id(), originator_version=2, timestamp=None, name="x")
    with pytest.raises(UntranslatedEventError, match="OrgRenamedSecretly"):
        to_integration_event(stray, 1)


def test_each_translation_names_every_field_of_its_stored_event():
    """A field of a stored event is published or withheld on purpose; one renamed in the domain no
    longer matches its translation and fails here (and at translation) instead of changing the contract."""
    for event_class, translation in TRANSLATIONS.items():
        mapped = set(translation.fields.values()) | translation.withheld
        assert mapped == domain_fields(event_class), event_class.__qualname__


def test_the_published_events_keep_the_shape_consumers_know():
    """Type, aggregate type and data are what the directory published before the typed models (a stored
    event's own fields): the contract was written down, not changed."""
    for domain_event, event in published():
        legacy = {k: to_plain(v) for k, v in vars(domain_event).items() if k not in ENVELOPE}
        assert event.type == type(domain_event).__name__
        assert event.aggregate_type == type(domain_event).__qualname__.split(".")[0]
        assert (event.version, event.data) == (1, legacy), event.type
        assert event.payload().model_dump(mode="json") == event.data
        assert event.actor == domain_event.actor and event.aggregate_id == str(domain_event.originator_id)


def test_every_published_type_and_version_has_a_fixture():
    write = os.environ.get("AQUEDUCT_WRITE_EVENT_FIXTURES") == "1"
    missing = []
    for _, event in published():
        path = FIXTURES / f"{event.type}.v{event.version}.json"
        if path.exists():
            continue
        if write:
            path.write_text(json.dumps(event.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n")
        else:
            missing.append(path.name)
    assert missing == [], f"no fixture for {missing}; AQUEDUCT_WRITE_EVENT_FIXTURES=1 writes them"
    published_versions = {(e.type, e.version) for _, e in published()}
    assert published_versions == set(DIRECTORY_EVENTS.versions()) - {
        (t, v) for t, v in DIRECTORY_EVENTS.versions() if v < DIRECTORY_EVENTS.latest(t).event_version
    }
