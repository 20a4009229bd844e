"""List routes search, sort and page on each object's brief and build full views for the page only: the
same answer as filtering built views, at a cost that does not grow with every user's view."""

from __future__ import annotations

from directory_testkit import make_app, make_world
from fastapi import Response

from aqueduct_directory.application.lazy_views import LazyViews, Projection
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.entrypoints.http.paging import ListQuery

PEOPLE = [{"id": f"u{i:05d}", "name": f"Person {i}", "email": f"p{i}@uni.example"} for i in range(5000)]


def _lazy(built: list[str]) -> LazyViews[dict[str, str]]:
    def view(person: dict[str, str]) -> dict[str, object]:
        built.append(person["id"])
        return {**person, "roles": ["User"]}

    return LazyViews(Projection(PEOPLE, lambda p: dict(p)), view)


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
        assert lazy == eager == _by_hand(query, fields)
        assert lazy_response.headers["x-total-count"] == eager_response.headers["x-total-count"]
        assert sorted(built) == sorted(p["id"] for p in lazy)  # no view beyond the page


def test_lazy_views_still_read_as_a_list() -> None:
    built: list[str] = []
    views = _lazy(built)
    assert len(views) == 5000 and views[1]["id"] == "u00001" and views[-1]["roles"] == ["User"]
    assert [v["id"] for v in views[:2]] == ["u00000", "u00001"]


def _by_hand(query: ListQuery, fields: tuple[str, ...]) -> list[dict[str, object]]:
    """The page as the API documents it: filter on any field, sort (stable), reverse for desc, page."""
    rows = [{**p, "roles": ["User"]} for p in PEOPLE]
    if query.q:
        rows = [r for r in rows if any(query.q.casefold() in str(r[f]).casefold() for f in fields)]
    if query.sort:
        rows.sort(key=lambda r: str(r[query.sort or ""]).casefold(), reverse=False)
        if query.order == "desc":
            rows.reverse()
    return rows[query.offset : query.offset + (query.limit or len(rows))]


def test_a_kept_list_follows_every_change_of_its_objects() -> None:
    world = make_world(make_app(None))
    app = world.app
    fields = ("email", "name", "id")

    def emails(q: str | None = None) -> list[str]:
        page = ListQuery(q=q, sort="email", order="asc", limit=100, offset=0)
        return [u["email"] for u in page.apply(app.list_users(SYSTEM, world.org), Response(), fields)]

    before = emails()
    assert app.list_users(SYSTEM, world.org).projection is app.list_users(SYSTEM, world.org).projection
    new = app.create_user(SYSTEM, world.org, "aaron@acme.test", "Aaron")["id"]
    assert emails() == ["aaron@acme.test", *before]
    app.update_user(SYSTEM, new, name="Zebulon")
    assert emails("zebulon") == ["aaron@acme.test"]
    app.deactivate_user(SYSTEM, new)
    assert emails() == before
    app.rebuild_state()  # a replay: the kept list is made again from the new read model
    assert emails() == before

    teams = ListQuery(q=None, sort="name", order="asc", limit=None, offset=0)
    app.create_team(SYSTEM, world.org, "analytics", "Numbers")
    listed = teams.apply(app.list_teams(SYSTEM, world.org, brief=True), Response(), ("name",))
    assert [(t["name"], t["member_count"]) for t in listed] == [("analytics", 0), ("ops", 0), ("research", 2)]
