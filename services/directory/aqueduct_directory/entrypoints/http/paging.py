"""Search, sort and pages for every list route: ``?q=&sort=&order=&limit=&offset=``.

A list keeps its shape (a JSON array) so existing clients go on working; the total before paging is in
the ``X-Total-Count`` header. Without ``limit`` the whole (filtered, sorted) list is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Response
from fastapi.exceptions import RequestValidationError

from aqueduct_directory.application.lazy_views import LazyViews, Projection

__all__ = ["MAX_PAGE", "ListQuery", "Paged", "paged"]

MAX_PAGE = 1000


@dataclass(frozen=True)
class ListQuery:
    q: str | None
    sort: str | None
    order: Literal["asc", "desc"]
    limit: int | None
    offset: int

    def apply(
        self, rows: Sequence[dict[str, Any]], response: Response, fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Filter by ``q`` (case-insensitive, any of ``fields``), sort by ``sort`` (one of ``fields``), page.
        With ``LazyViews``, search and sort use the kept projection and only the page's views are built."""
        if self.sort is not None and self.sort not in fields:
            # Answered like any other bad query parameter (the app's validation handler).
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", "sort"),
                        "msg": f"sort by one of: {', '.join(fields)}",
                        "type": "value_error",
                    }
                ]
            )
        lazy = rows if isinstance(rows, LazyViews) else LazyViews(Projection(rows, _same), _same)
        projection = lazy.projection
        chosen = projection.select(self.q, self.sort, self.order == "desc", fields)
        response.headers["X-Total-Count"] = str(len(chosen))
        end = None if self.limit is None else self.offset + self.limit
        return [lazy.view(projection.objects[i]) for i in chosen[self.offset : end]]


def _same(row: dict[str, Any]) -> dict[str, Any]:
    return row


def _list_query(
    q: Annotated[str | None, Query(max_length=200, description="Search text (any shown field)")] = None,
    sort: Annotated[str | None, Query(max_length=40, description="Field to sort by")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="Sort order")] = "asc",
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Page size")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")] = 0,
) -> ListQuery:
    return ListQuery(q=q, sort=sort, order=order, limit=limit, offset=offset)


Paged = Annotated[ListQuery, Depends(_list_query)]


def paged(
    query: ListQuery, response: Response, rows: Sequence[dict[str, Any]], fields: Sequence[str]
) -> list[dict[str, Any]]:
    return query.apply(rows, response, fields)
