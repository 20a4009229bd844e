"""Routes for endpoints, models, MCP servers and terms of service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from aqueduct_directory.entrypoints.http.deps import CurrentUser, DirectoryDep
from aqueduct_directory.entrypoints.http.paging import Paged, paged
from aqueduct_directory.entrypoints.http.schemas import (
    EndpointIn,
    EndpointPatch,
    McpServerIn,
    McpServerPatch,
    ModelIn,
    ModelPatch,
    TermsIn,
)

__all__ = ["router"]

router = APIRouter(prefix="/api")
Json = dict[str, Any]

ENDPOINT_FIELDS = ("slug", "url", "provider")
MODEL_FIELDS = ("name", "endpoint", "upstream_model")


@router.get("/endpoints", tags=["endpoints"])
async def list_endpoints(
    user: CurrentUser, directory: DirectoryDep, page: Paged, response: Response
) -> list[Json]:
    return paged(page, response, directory.list_endpoints(), ENDPOINT_FIELDS)


@router.post("/endpoints", tags=["endpoints"], status_code=201)
async def register_endpoint(body: EndpointIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.register_endpoint(user, **body.model_dump())


@router.patch("/endpoints/{slug}", tags=["endpoints"])
async def update_endpoint(slug: str, body: EndpointPatch, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.update_endpoint(user, slug, **body.model_dump(exclude_unset=True))


@router.delete("/endpoints/{slug}", tags=["endpoints"], status_code=204)
async def remove_endpoint(slug: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.remove_endpoint(user, slug)
    return Response(status_code=204)


@router.get("/models", tags=["models"])
async def list_models(
    user: CurrentUser,
    directory: DirectoryDep,
    page: Paged,
    response: Response,
    all: Annotated[
        bool, Query(description="Every model, with `available` and `unavailable_reason` for the caller")
    ] = False,
) -> list[Json]:
    """The models the caller may use (what the proxy's /v1/models shows their tokens), or, with
    ``all=true``, the whole catalogue with the reason each unavailable model is unavailable."""
    return paged(page, response, directory.list_models(user, all), MODEL_FIELDS)


@router.post("/models", tags=["models"], status_code=201)
async def register_model(body: ModelIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.register_model(user, **body.model_dump())


@router.patch("/models/{name}", tags=["models"])
async def update_model(name: str, body: ModelPatch, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.update_model(user, name, **body.model_dump(exclude_unset=True))


@router.delete("/models/{name}", tags=["models"], status_code=204)
async def remove_model(name: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.remove_model(user, name)
    return Response(status_code=204)


@router.get("/mcp-servers", tags=["mcp"])
async def list_mcp_servers(user: CurrentUser, directory: DirectoryDep) -> list[Json]:
    return directory.list_mcp_servers(user)


@router.post("/mcp-servers", tags=["mcp"], status_code=201)
async def register_mcp_server(body: McpServerIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.register_mcp_server(user, **body.model_dump())


@router.patch("/mcp-servers/{name}", tags=["mcp"])
async def update_mcp_server(
    name: str, body: McpServerPatch, user: CurrentUser, directory: DirectoryDep
) -> Json:
    return directory.update_mcp_server(user, name, **body.model_dump(exclude_unset=True))


@router.delete("/mcp-servers/{name}", tags=["mcp"], status_code=204)
async def remove_mcp_server(name: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.remove_mcp_server(user, name)
    return Response(status_code=204)


@router.get("/terms", tags=["terms"])
async def current_terms(user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.current_terms() or {}


@router.post("/terms", tags=["terms"], status_code=201)
async def publish_terms(body: TermsIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.publish_terms(user, body.version, body.url)
