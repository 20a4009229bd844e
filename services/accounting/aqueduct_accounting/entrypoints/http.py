"""HTTP entrypoint: the reports API and read-only SQL. Routes only translate; errors are mapped here once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from aqueduct_accounting.adapters.api_tokens import (
    ApiTokenRejectedError,
    ApiTokenViewers,
    DirectoryUnavailableError,
)
from aqueduct_accounting.adapters.clickhouse import ClickHouseError
from aqueduct_accounting.application.dead_letters import DeadLetterAdmin
from aqueduct_accounting.application.reports import BadReportRequestError, Reports, ReportWindow
from aqueduct_accounting.domain.budget_status import BudgetLine
from aqueduct_accounting.domain.readonly_sql import ReadOnlySqlError
from aqueduct_accounting.domain.scope import ForbiddenError, UsageFilter, Viewer, scope_predicate
from aqueduct_accounting.entrypoints.http_dead_letters import add_dead_letter_routes
from aqueduct_libs import bounds
from aqueduct_libs.current_roles import CurrentRoles, RolesNotLoadedError
from aqueduct_libs.ops import add_operational_routes
from aqueduct_libs.sessions import InvalidSessionError, SessionVerifier
from aqueduct_libs.tokens import TOKEN_PREFIX

__all__ = ["HttpDeps", "create_app"]


@dataclass
class HttpDeps:
    reports: Reports
    verifier: SessionVerifier
    # The current roles and active state of a session token's user (the directory's auth snapshot): a
    # session acts with those, never with the roles written into the token at sign-in.
    roles: CurrentRoles
    ready: Callable[[], bool]
    registry: CollectorRegistry | None = None
    # API tokens (aq-...) resolved through the directory; None: session tokens only.
    api_tokens: ApiTokenViewers | None = None
    # Started with the server and stopped before it exits (uvicorn re-raises SIGTERM once it returns,
    # so a graceful flush must happen in the lifespan).
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    # Spent / remaining / resets-at of budgets; None: the route answers 503.
    budgets: BudgetStatus | None = None

    # Why the service is not ready (ingest stuck, far behind, ...), for /readyz.
    not_ready_reasons: Callable[[], list[str]] | None = None
    dead_letters: DeadLetterAdmin | None = None


class BudgetStatus(Protocol):
    async def status(self, scopes: list[tuple[str, str]]) -> list[BudgetLine]: ...


class NotAuthenticatedError(Exception):
    pass


class SqlRequest(BaseModel):
    query: str


def _problem(status: int, detail: str, code: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status)


def _deps(request: Request) -> HttpDeps:
    return request.app.state.deps  # type: ignore[no-any-return]


async def _viewer(request: Request) -> Viewer:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise NotAuthenticatedError("a session token or an API token is required (Authorization: Bearer ...)")
    deps = _deps(request)
    if credential.strip().startswith(TOKEN_PREFIX) and deps.api_tokens is not None:
        try:
            return await deps.api_tokens.viewer(credential.strip())
        except ApiTokenRejectedError as exc:
            raise NotAuthenticatedError(str(exc)) from exc
    if not deps.verifier.ready:
        raise NotAuthenticatedError("session keys are not loaded yet; try again shortly")
    try:
        claims = deps.verifier.verify(credential.strip())
        claims = await deps.roles.current(claims)
    except InvalidSessionError as exc:
        raise NotAuthenticatedError(f"invalid session token: {exc}") from exc
    except RolesNotLoadedError as exc:
        raise NotAuthenticatedError(str(exc)) from exc
    return Viewer.from_claims(claims)


def _reports(request: Request) -> Reports:
    return _deps(request).reports


def _window(
    since: Annotated[
        datetime | None, Query(description="start (inclusive), ISO 8601; default 30 days ago")
    ] = None,
    until: Annotated[datetime | None, Query(description="end (exclusive), ISO 8601; default now")] = None,
) -> ReportWindow:
    # A time without a zone is read as UTC (the zone every report speaks), never compared naive to aware.
    until = _utc(until) if until else datetime.now(UTC)
    since = _utc(since) if since else until - timedelta(days=30)
    return ReportWindow(since, until)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# No stored id or model name is longer than an event's text may be (bounds.MAX_TEXT_LENGTH): a longer
# filter can match nothing; refused (400 bad_request) before any work is done.
FilterValue = Annotated[str | None, Query(max_length=bounds.MAX_TEXT_LENGTH)]


def _filter(
    org_id: FilterValue = None,
    team_id: FilterValue = None,
    user_id: FilterValue = None,
    token_id: FilterValue = None,
    model: FilterValue = None,
) -> UsageFilter:
    return UsageFilter(org_id, team_id, user_id, token_id, model)


CurrentViewer = Annotated[Viewer, Depends(_viewer)]
ReportsDep = Annotated[Reports, Depends(_reports)]
Window = Annotated[ReportWindow, Depends(_window)]
Filter = Annotated[UsageFilter, Depends(_filter)]
GroupByParam = Annotated[str | None, Query(description="model, user, team, org or token")]


def create_app(deps: HttpDeps) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if deps.on_start:
            await deps.on_start()
        try:
            yield
        finally:
            if deps.on_stop:
                await deps.on_stop()

    app = FastAPI(title="Aqueduct accounting", version="1", lifespan=lifespan)
    app.state.deps = deps
    add_operational_routes(app, deps.ready, deps.registry, deps.not_ready_reasons)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
        return _problem(400, f"{where}: {first.get('msg', 'invalid input')}".strip(": "), "bad_request")

    @app.exception_handler(NotAuthenticatedError)
    async def _unauthenticated(_: Request, exc: NotAuthenticatedError) -> JSONResponse:
        return _problem(401, str(exc), "unauthenticated")

    @app.exception_handler(DirectoryUnavailableError)
    async def _directory_down(_: Request, exc: DirectoryUnavailableError) -> JSONResponse:
        return _problem(503, f"API tokens cannot be checked right now: {exc}", "directory_unavailable")

    @app.exception_handler(ForbiddenError)
    async def _forbidden(_: Request, exc: ForbiddenError) -> JSONResponse:
        return _problem(403, str(exc), "forbidden")

    @app.exception_handler(BadReportRequestError)
    async def _bad_report(_: Request, exc: BadReportRequestError) -> JSONResponse:
        return _problem(400, str(exc), "bad_request")

    @app.exception_handler(ReadOnlySqlError)
    async def _not_read_only(_: Request, exc: ReadOnlySqlError) -> JSONResponse:
        return _problem(400, str(exc), "read_only")

    @app.exception_handler(ClickHouseError)
    async def _sql_error(_: Request, exc: ClickHouseError) -> JSONResponse:
        return _problem(400, str(exc).strip().splitlines()[0][:2000], "sql_error")

    @app.post("/api/sql")
    async def run_sql(body: SqlRequest, viewer: CurrentViewer, reports: ReportsDep) -> dict[str, Any]:
        """Read-only SQL (ClickHouse dialect) over usage and audit tables. Admins only."""
        if not viewer.admin:
            raise ForbiddenError("ad-hoc SQL is for Admins")
        result = await reports.sql(body.query)
        return jsonable_encoder({"columns": result.columns, "rows": result.rows})

    @app.get("/api/usage/summary")
    async def summary(
        viewer: CurrentViewer,
        reports: ReportsDep,
        window: Window,
        wanted: Filter,
        group_by: GroupByParam = None,
    ) -> dict[str, Any]:
        """Totals, and per group when ``group_by`` is given."""
        return await reports.summary(viewer, wanted, window, group_by)

    @app.get("/api/usage/timeseries")
    async def timeseries(
        viewer: CurrentViewer,
        reports: ReportsDep,
        window: Window,
        wanted: Filter,
        group_by: GroupByParam = None,
        bucket: str = "hour",
    ) -> dict[str, Any]:
        """Totals per ``bucket`` (minute, hour, day), per group when ``group_by`` is given."""
        return await reports.timeseries(viewer, wanted, window, bucket, group_by)

    @app.get("/api/usage/top")
    async def top(
        viewer: CurrentViewer,
        reports: ReportsDep,
        window: Window,
        wanted: Filter,
        group_by: str = "model",
        order_by: str = "cost",
        limit: int = 10,
    ) -> dict[str, Any]:
        """The largest groups by cost, tokens or requests."""
        return await reports.top(viewer, wanted, window, group_by, order_by, limit)

    @app.get("/api/usage/export.csv")
    async def export_csv(
        viewer: CurrentViewer,
        reports: ReportsDep,
        window: Window,
        wanted: Filter,
        group_by: GroupByParam = None,
        bucket: str | None = None,
    ) -> Response:
        """The summary (or, with ``bucket``, the time series) as CSV."""
        body = await reports.export_csv(viewer, wanted, window, group_by, bucket)
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )

    @app.get("/api/budgets/status", response_model=None)
    async def budget_status(
        viewer: CurrentViewer,
        scope: Annotated[
            Literal["user", "team", "org"] | None,
            Query(description="user, team or org; default: every budget that applies to the viewer"),
        ] = None,
        id: Annotated[str | None, Query(description="the user's, team's or org's id", min_length=1)] = None,
    ) -> dict[str, Any] | JSONResponse:
        """Spent, remaining and "resets at" per budget (daily and monthly, dollars and tokens). Without
        ``scope``: the viewer's own, their teams' and their org's budgets. With it: that one, when the
        viewer may read its usage (the reports API's rule)."""
        if deps.budgets is None:
            return _problem(503, "budgets are not tracked by this accounting service", "unavailable")
        if scope is None:
            if id is not None:
                raise BadReportRequestError("id needs a scope (user, team or org)")
            scopes = [("user", viewer.user_id)]
            scopes += [("team", t) for t in sorted(set(viewer.teams) | set(viewer.team_admin))]
            if viewer.org_id:
                scopes.append(("org", viewer.org_id))
        else:
            if id is None:
                raise BadReportRequestError("scope needs an id")
            scope_predicate(viewer, UsageFilter(**{f"{scope}_id": id}))  # refuses what is out of reach
            scopes = [(scope, id)]
        lines = await deps.budgets.status(scopes)
        return {"budgets": [line.as_json() for line in lines]}

    add_dead_letter_routes(app, CurrentViewer)
    return app
