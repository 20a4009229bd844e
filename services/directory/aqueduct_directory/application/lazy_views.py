"""Lists whose views are built only for the rows a page shows.

A list route searches and sorts on a few plain fields (name, email, ids, creation time); building the full
view of every user or team (roles, teams, members with their names) before paging made the Users and Teams
lists slow at the size of a university. ``LazyViews`` carries the objects, a cheap ``brief`` of the
searchable fields, and the view function; it is still a sequence of views for any caller that iterates it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

__all__ = ["LazyViews"]

T = TypeVar("T")


class LazyViews(Sequence[dict[str, Any]], Generic[T]):
    def __init__(
        self,
        objects: Sequence[T],
        brief: Callable[[T], dict[str, Any]],
        view: Callable[[T], dict[str, Any]],
    ) -> None:
        self.objects = list(objects)
        self.brief = brief
        self.view = view

    def __len__(self) -> int:
        return len(self.objects)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self.view(o) for o in self.objects[index]]
        return self.view(self.objects[index])
