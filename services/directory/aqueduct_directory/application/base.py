"""The event-sourced application core: persistence, the read model it keeps current, and save()."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from aqueduct_directory.application.audit_index import AuditIndex
from aqueduct_directory.application.lazy_views import Projection
from aqueduct_directory.domain.errors import NotFoundError, PermissionDeniedError
from aqueduct_directory.domain.policy import SYSTEM, Principal
from aqueduct_directory.domain.state import DirectoryState
from aqueduct_libs.events import utcnow

__all__ = ["DirectoryCore", "fold_events"]

A = TypeVar("A", bound=Aggregate)

# Notifications are read in pages this large when folding or relaying.
PAGE = 1000
# List projections kept (per kind of list, org and option); more means someone asks for made-up orgs.
KEPT_PROJECTIONS = 64


class DirectoryCore(Application):
    """Holds the read model and the wiring every group of use cases shares."""

    name = "directory"

    def __init__(
        self,
        env: dict[str, str],
        secret_key: bytes,
        max_tokens_per_user: int = 10,
        max_service_accounts_per_team: int = 50,
        default_org: str = "default",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(env=env)
        self.store_env = dict(env)
        self.secret_key = secret_key
        self.max_tokens_per_user = max_tokens_per_user
        self.max_service_accounts_per_team = max_service_accounts_per_team
        self.default_org = default_org
        self.clock = clock
        self.listeners: list[Callable[[], None]] = []
        self.state = DirectoryState()
        self.audit = AuditIndex()
        self._projections: dict[tuple[Any, ...], tuple[DirectoryState, int, Projection[Any]]] = {}
        self.catch_up()

    # -- the read model ----------------------------------------------------------------------------

    def iter_events(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, Any]]:
        """Stored domain events in notification order, with their notification ids."""
        position = start
        while True:
            page = self.recorder.select_notifications(start=position, limit=PAGE, stop=stop)
            for notification in page:
                yield notification.id, self.mapper.to_domain_event(notification)
            if len(page) < PAGE:
                return
            position = page[-1].id + 1

    def catch_up(self) -> None:
        """Fold the events stored since the last look into the read model and the audit index."""
        start = min(self.state.position, self.audit.position) + 1
        for notification_id, domain_event in self.iter_events(start):
            if notification_id > self.state.position:
                self.state.apply(domain_event, notification_id)
            if notification_id > self.audit.position:
                self.audit.record(domain_event, notification_id)
        for listener in self.listeners:
            listener()

    def rebuild_state(self) -> DirectoryState:
        """Fold every stored event into a fresh read model and use it from now on (replay)."""
        self.state = fold_events(self.iter_events())
        self.catch_up()  # the audit index too, should events have arrived meanwhile
        return self.state

    def stored_events(self, notification_ids: list[int]) -> dict[int, Any]:
        """Some stored domain events by notification id: one range read when they lie close together."""
        if not notification_ids:
            return {}
        low, high = min(notification_ids), max(notification_ids)
        if high - low < 4 * len(notification_ids):
            ranges = [(low, high)]
        else:
            ranges = [(i, i) for i in sorted(notification_ids)]
        wanted, found = set(notification_ids), {}
        for start, stop in ranges:
            for notification in self.recorder.select_notifications(start, stop - start + 1, stop=stop):
                if notification.id in wanted:
                    found[notification.id] = self.mapper.to_domain_event(notification)
        return found

    def kept_projection(
        self, key: tuple[Any, ...], kind: str, build: Callable[[], Projection[Any]]
    ) -> Projection[Any]:
        """A list's projection (``key`` names the list), built again only once objects of ``kind``
        changed or the read model was replayed."""
        kept = self._projections.get(key)
        version = self.state.changes[kind]
        if kept is not None and kept[0] is self.state and kept[1] == version:
            return kept[2]
        if len(self._projections) >= KEPT_PROJECTIONS:
            self._projections.clear()
        projection = build()
        self._projections[key] = (self.state, version, projection)
        return projection

    def commit(self, *aggregates: Aggregate) -> None:
        self.save(*aggregates)
        self.catch_up()

    # -- helpers for use cases ---------------------------------------------------------------------

    def principal(self, user_id: str) -> Principal:
        if user_id == SYSTEM.user_id:
            return SYSTEM
        user = self.state.users.get(user_id)
        if user is None or user.deleted:
            raise PermissionDeniedError("unknown or deactivated user")
        teams = self.state.teams_of(user_id)
        return Principal(
            user_id=user_id,
            org_id=user.org_id,
            admin=user.admin,
            org_admin=user.org_admin,
            team_ids=frozenset(str(t.id) for t in teams),
            team_admin_ids=frozenset(str(t.id) for t in teams if t.is_admin(user_id)),
        )

    def editable(self, aggregate: A) -> A:
        """A private copy to run commands on: the read model only changes once events are stored."""
        return copy.deepcopy(aggregate)

    def find(self, table: dict[str, A], key: str, what: str) -> A:
        found = table.get(key)
        if found is None or getattr(found, "deleted", False) or getattr(found, "revoked", False):
            raise NotFoundError(f"{what} {key!r} not found", f"{what.replace(' ', '_')}_not_found")
        return found


def fold_events(events: Iterator[tuple[int, Any]], until: datetime | None = None) -> DirectoryState:
    """A read model from scratch; with ``until``, only the events recorded up to that moment."""
    state = DirectoryState()
    for notification_id, domain_event in events:
        if until is not None and domain_event.timestamp > until:
            break
        state.apply(domain_event, notification_id)
    return state
