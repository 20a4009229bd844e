"""Lists whose views are built only for the rows a page shows, over projections kept between requests.

A list route searches and sorts on a few plain fields (name, email, ids, creation time). At the size of a
university, building the full view of every user or team (roles, teams, members with their names) before
paging was slow, and so was sorting 20,000 users and making their search fields on every request.
``Projection`` holds the objects in their default order, a cheap ``brief`` of each, the lowered search
text per set of fields and the sort order per field, computed on first use; the application keeps one per
list and builds it again only when objects of its kind changed. ``LazyViews`` pairs a projection with the
view function; it is still a sequence of views for any caller that iterates it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

__all__ = ["LazyViews", "Projection"]

T = TypeVar("T")


class Projection(Generic[T]):
    def __init__(self, objects: Sequence[T], brief: Callable[[T], dict[str, Any]]) -> None:
        self.objects = list(objects)
        self.briefs = [brief(o) for o in self.objects]
        self._search_text: dict[tuple[str, ...], list[str]] = {}
        self._orders: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.objects)

    def select(self, q: str | None, sort: str | None, descending: bool, fields: Sequence[str]) -> list[int]:
        """Positions of the objects whose ``fields`` contain ``q`` (any case), sorted by ``sort``.

        Sorting is stable on the default order, then reversed for ``descending``: the same answer as
        filtering first and sorting the rest."""
        order: Sequence[int] = range(len(self.objects)) if sort is None else self._order(sort)
        if q:
            needle = q.casefold()
            text = self._text(tuple(fields))
            order = [i for i in order if needle in text[i]]
        chosen = list(order)
        if sort is not None and descending:
            chosen.reverse()
        return chosen

    def _text(self, fields: tuple[str, ...]) -> list[str]:
        if fields not in self._search_text:
            # One lowered string per object; the separator cannot be typed into a search box.
            self._search_text[fields] = [
                "\x00".join(str(b.get(f) or "").casefold() for f in fields) for b in self.briefs
            ]
        return self._search_text[fields]

    def _order(self, field: str) -> list[int]:
        if field not in self._orders:
            briefs = self.briefs
            self._orders[field] = sorted(
                range(len(briefs)),
                key=lambda i: (briefs[i].get(field) is None, str(briefs[i].get(field) or "").casefold()),
            )
        return self._orders[field]


class LazyViews(Sequence[dict[str, Any]], Generic[T]):
    def __init__(self, projection: Projection[T], view: Callable[[T], dict[str, Any]]) -> None:
        self.projection = projection
        self.view = view

    def __len__(self) -> int:
        return len(self.projection)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self.view(o) for o in self.projection.objects[index]]
        return self.view(self.projection.objects[index])
