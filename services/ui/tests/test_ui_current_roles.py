"""The UI's lookup of the viewer's current roles against a real HTTP server playing the directory: kept
per session for ``ttl``; when the directory is down, the roles it last gave for the session still hold
(never the sign-in's, which a demoted Admin's session still carries)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from aqueduct_cli.embedded import free_port
from aqueduct_ui.adapters.api import ServiceApi
from aqueduct_ui.application.roles import NO_ROLES, CurrentRoles
from aqueduct_ui.domain.viewer import Roles


class Directory:
    """Answers GET /api/me per bearer token from ``people``; ``status`` other than 200 is answered as is."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.status = 200
        self.calls = 0

    async def me(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.status != 200:
            return web.json_response({"detail": "down", "code": "x"}, status=self.status)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.people:
            return web.json_response({"detail": "unknown session", "code": "not_authenticated"}, status=401)
        return web.json_response(self.people[token])


@pytest.fixture
async def directory() -> AsyncIterator[tuple[Directory, str]]:
    state = Directory()
    app = web.Application()
    app.router.add_get("/api/me", state.me)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield state, f"http://127.0.0.1:{port}"
    await runner.cleanup()


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_roles_are_kept_per_session_and_stay_as_last_known_while_the_directory_is_down(
    directory,
) -> None:
    state, url = directory
    state.people = {
        "s-dana": {"admin": False, "org_admin": True, "org_id": "o1", "teams": [], "team_admin": []},
        "s-uma": {"admin": False, "org_admin": False, "org_id": "o1", "teams": ["t1"], "team_admin": []},
    }
    clock = Clock()
    roles = CurrentRoles(ttl=2.0, clock=clock)
    async with httpx.AsyncClient() as http:

        def api(token: str) -> ServiceApi:
            return ServiceApi(http, url, token)

        dana = await roles.of("s-dana", api("s-dana"))
        uma = await roles.of("s-uma", api("s-uma"))
        assert dana == Roles(org_admin=True, org_id="o1") and uma == Roles(
            org_id="o1", teams=frozenset({"t1"})
        )
        assert await roles.of("s-dana", api("s-dana")) == dana and state.calls == 2  # kept, per session
        assert await roles.of("s-nobody", api("s-nobody")) == NO_ROLES  # 401: nothing offered

        state.status = 503  # the directory goes down
        clock.now += 5
        assert await roles.of("s-dana", api("s-dana")) == dana  # last known, not the sign-in's (None)
        roles.forget()  # a form went through
        assert await roles.of("s-uma", api("s-uma")) == uma
        # A session never seen: nothing known, the sign-in's roles apply (None).
        assert await roles.of("s-new", api("s-new")) is None

        state.status = 200  # back: read afresh
        state.people["s-dana"]["org_admin"] = False
        clock.now += 5
        assert await roles.of("s-dana", api("s-dana")) == Roles(org_id="o1")
