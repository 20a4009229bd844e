"""Versions of typed integration events: which model reads which (type, version), and the upcasters between.

An event type's model only ever gains optional fields within a version, so data published by an older
producer always parses with the newer model of the same version. A change that is not that (a field
renamed, removed, retyped or made required) is a new version: its model gets ``event_version = n + 1``,
the old model stays registered under ``n``, and an upcaster turns version ``n``'s data into ``n + 1``'s.
Reading data of any known version then yields the newest model of its type (``EventRegistry.parse``), so
a consumer is written against one model per type however old the event it reads. This mirrors what the
eventsourcing library does for stored events (``class_version``, ``upcast_vN_vN+1``), for the public
contract instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["EventModel", "EventRegistry", "UnknownEventError", "Upcaster"]

M = TypeVar("M", bound="EventModel")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventModel(BaseModel):
    """The fields of one event type at one version. ``event_type`` defaults to the class name.

    Unknown fields are ignored, so a consumer reads what a newer producer adds within the version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__


class UnknownEventError(ValueError):
    """No model reads this type, or this version of it (e.g. published by a newer producer)."""


class EventRegistry:
    """Models by (type, version) and upcasters by (type, from version)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[EventModel]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def model(self, cls: type[M]) -> type[M]:
        """Class decorator: register a model under its type and version (each pair once)."""
        key = (cls.event_type, cls.event_version)
        if key in self._models:
            raise ValueError(f"{cls.event_type} v{cls.event_version} is already registered")
        self._models[key] = cls
        return cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register the function turning ``from_version``'s data into the next version's."""

        def register(upcast: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._upcasters:
                raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")
            self._upcasters[key] = upcast
            return upcast

        return register

    def versions(self) -> list[tuple[str, int]]:
        """Every registered (type, version), sorted."""
        return sorted(self._models)

    def latest(self, event_type: str) -> type[EventModel]:
        found = [v for (t, v) in self._models if t == event_type]
        if not found:
            raise UnknownEventError(f"no model for event type {event_type!r}")
        return self._models[(event_type, max(found))]

    def model_of(self, event_type: str, version: int) -> type[EventModel]:
        try:
            return self._models[(event_type, version)]
        except KeyError:
            newest = self.latest(event_type).event_version
            raise UnknownEventError(
                f"no model for {event_type} v{version} (this code reads up to v{newest})"
            ) from None

    def parse(self, event_type: str, version: int, data: Mapping[str, Any]) -> EventModel:
        """Data of any known version of the type, as the newest model of that type.

        Each step validates the data against that version's model before upcasting it, so bad data
        is reported against the version it claims to be. Raises ``UnknownEventError`` for an unknown
        type or version, pydantic's ``ValidationError`` for data its model refuses."""
        current = self.model_of(event_type, version).model_validate(dict(data))
        newest = self.latest(event_type).event_version
        while version < newest:
            upcast = self._upcasters.get((event_type, version))
            if upcast is None:
                raise UnknownEventError(f"no upcaster from {event_type} v{version} to v{version + 1}")
            version += 1
            current = self.model_of(event_type, version).model_validate(upcast(current.model_dump()))
        return current

    def check(self) -> list[str]:
        """What is missing for every registered version to reach the newest (empty: nothing)."""
        problems = []
        for event_type in {t for t, _ in self._models}:
            have = sorted(v for t, v in self._models if t == event_type)
            if have != list(range(1, have[-1] + 1)):
                problems.append(f"{event_type} has versions {have}: each from 1 to the newest needs a model")
        for event_type, version in self.versions():
            newest = self.latest(event_type).event_version
            if version < newest and (event_type, version) not in self._upcasters:
                problems.append(f"{event_type} v{version} has no upcaster to v{version + 1}")
        return problems
