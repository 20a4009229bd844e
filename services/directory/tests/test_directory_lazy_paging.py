"""List routes search, sort and page on each object's brief and build full views for the page only: the
same answer as filtering built views, at a cost that does not grow with every user's view."""

from __future__ import annotations

from fastapi import Response

from aqueduct_directory.application.lazy_views import LazyViews
from aqueduct_directory.entrypoints.http.paging import ListQuery

PEOPLE = [{"id": f"u{i:05d}", "name": f"Person {i}", "email": f"p{i}@uni.example"} for i in range(5000)]


def _lazy(built: list[str]) -> LazyViews[dict[str, str]]:
    def view(person: dict[str, str]) -> dict[str, object]:
        built.append(person["id"])
        return {**person, "roles": ["User"]}

    return LazyViews(PEOPLE, lambda p: dict(p), view)


def test_only_the_page_is_built_and_the_answer_is_the_eager_one() -> None:
    fields = ("name", "email", "id")
    for query in (
        ListQuery(q="person 12", sort="email", order="desc", limit=7, offset=3),
        ListQuery(q=None, sort="name", order="asc", limit=20, offset=4980),
        ListQuery(q="nobody", sort=None, order="asc", limit=10, offset=0),
    ):
        built: list[str] = []
        lazy_response, eager_response = Response(), Response()
        lazy = query.apply(_lazy(built), lazy_response, fields)
        eager = query.apply([{**p, "roles": ["User"]} for p in PEOPLE], eager_response, fields)
        assert lazy == eager
        assert lazy_response.headers["x-total-count"] == eager_response.headers["x-total-count"]
        assert sorted(built) == sorted(p["id"] for p in lazy)  # no view beyond the page


def test_lazy_views_still_read_as_a_list() -> None:
    built: list[str] = []
    views = _lazy(built)
    assert len(views) == 5000 and views[1]["id"] == "u00001" and views[-1]["roles"] == ["User"]
    assert [v["id"] for v in views[:2]] == ["u00000", "u00001"]
