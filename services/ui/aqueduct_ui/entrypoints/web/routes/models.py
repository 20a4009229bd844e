"""The models page: endpoints, their models and how to call them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aqueduct_ui.application.models import load_models_page
from aqueduct_ui.entrypoints.web.deps import Api, Context, CurrentViewer
from aqueduct_ui.entrypoints.web.render import render

__all__ = ["router"]

router = APIRouter()


@router.get("/models")
async def models_page(request: Request, ctx: Context, viewer: CurrentViewer, api: Api) -> Response:
    page = await load_models_page(api, viewer, ctx.common.proxy_url)
    return render(request, "models.html", data=page)
