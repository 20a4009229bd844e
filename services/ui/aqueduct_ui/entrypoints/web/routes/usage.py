"""The usage page (charts of requests, tokens and cost) and its CSV export."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from aqueduct_ui.application.budgets import load_budget_state
from aqueduct_ui.application.usage import GROUP_LABELS, RANGES, load_usage_page, resolve_query
from aqueduct_ui.domain.charts import bar_chart, format_count, format_usd, line_chart
from aqueduct_ui.entrypoints.web.deps import Api, CurrentViewer
from aqueduct_ui.entrypoints.web.render import render

__all__ = ["router"]

router = APIRouter()


@router.get("/usage")
async def usage_page(
    request: Request,
    viewer: CurrentViewer,
    api: Api,
    range: str | None = None,
    since: str | None = None,
    until: str | None = None,
    group_by: str | None = None,
) -> Response:
    query = resolve_query(viewer, range, since, until, group_by)
    page, budgets = await asyncio.gather(load_usage_page(api, viewer, query), load_budget_state(api, viewer))
    group_label = GROUP_LABELS[query.group_by]
    charts = {
        "requests": line_chart(page.requests, query.since, query.until, f"Requests per {query.bucket}"),
        "tokens": line_chart(
            page.tokens, query.since, query.until, f"Tokens (input + output) per {query.bucket}"
        ),
        "cost": line_chart(page.cost, query.since, query.until, f"Cost per {query.bucket} (USD)", format_usd),
        "by_group": bar_chart(
            [(g.label, g.cost_usd) for g in page.groups[:12]], f"Cost by {group_label.lower()}", format_usd
        ),
        "by_group_requests": bar_chart(
            [(g.label, float(g.requests)) for g in page.groups[:12]], f"Requests by {group_label.lower()}"
        ),
    }
    export = "/usage/export.csv?" + urlencode(query.params())
    return render(
        request,
        "usage.html",
        data=page,
        budgets=budgets,
        charts=charts,
        ranges=RANGES,
        group_labels=GROUP_LABELS,
        group_label=group_label,
        export_url=export,
        format_count=format_count,
        format_usd=format_usd,
    )


@router.get("/usage/export.csv")
async def export_csv(
    viewer: CurrentViewer,
    api: Api,
    since: str | None = None,
    until: str | None = None,
    group_by: str | None = None,
) -> Response:
    group = group_by if group_by in viewer.usage_scopes else "model"
    answer = await api.accounting.raw(
        "GET", "/api/usage/export.csv", params={"since": since, "until": until, "group_by": group}
    )
    return Response(
        answer.content,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="aqueduct-usage-by-{group}.csv"'},
    )
