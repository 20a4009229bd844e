"""The Admin pages: orgs (limits, budgets, model exclusions), users, endpoints, models, terms of service,
MCP servers, and the audit view.

Only the pages check the role (to say plainly that they are for Admins); the actions go to the directory
API with the user's session and are refused there when the role is missing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from starlette.responses import Response

from aqueduct_ui.adapters.api import ApiError, q
from aqueduct_ui.application.admin import load_admin_page, load_audit_page
from aqueduct_ui.application.dead_letters import load_dead_letters_page, redrive_all, redrive_one
from aqueduct_ui.domain.forms import (
    BUDGET_FIELDS,
    LIMIT_FIELDS,
    FormError,
    parse_api_key_env,
    parse_budgets,
    parse_limits,
    parse_model_limits,
    parse_moment,
    parse_price,
    parse_url,
    require_text,
)
from aqueduct_ui.domain.viewer import Viewer
from aqueduct_ui.entrypoints.web.cookies import Flash
from aqueduct_ui.entrypoints.web.deps import Api, CurrentViewer
from aqueduct_ui.entrypoints.web.render import redirect, render

__all__ = ["router"]

router = APIRouter(prefix="/admin")


def require_admin_page(viewer: CurrentViewer) -> Viewer:
    if not viewer.admin:
        raise ApiError(403, "The Admin pages are for Admins.", "forbidden")
    return viewer


AdminViewer = Annotated[Viewer, Depends(require_admin_page)]
_PROVIDERS = ("openai", "anthropic", "azure", "litellm")
# The token classes a model may price apart (blank: as its input or output price), with their labels.
TOKEN_PRICE_FIELDS = (
    ("cached_input_price_per_million", "Cached input (read) $ per 1M tokens"),
    ("cache_write_price_per_million", "Cache write (5 min) $ per 1M tokens"),
    ("cache_write_1h_price_per_million", "Cache write (1 h) $ per 1M tokens"),
    ("reasoning_price_per_million", "Reasoning $ per 1M tokens"),
)


def _done(request: Request, anchor: str, message: str) -> Response:
    return redirect(request, f"/admin#{anchor}", Flash("success", message))


@router.get("")
async def admin_page(request: Request, viewer: AdminViewer, api: Api) -> Response:
    page = await load_admin_page(api)
    return render(
        request,
        "admin.html",
        data=page,
        limit_fields=LIMIT_FIELDS,
        budget_fields=BUDGET_FIELDS,
        providers=_PROVIDERS,
        token_price_fields=TOKEN_PRICE_FIELDS,
        page_section="admin",
    )


@router.post("/orgs")
async def create_org(
    request: Request, api: Api, name: Annotated[str, Form()] = "", sso_group: Annotated[str, Form()] = ""
) -> Response:
    body = {"name": require_text(name, "Name", 100, "name"), "sso_group": sso_group.strip() or None}
    org = await api.directory.post("/api/orgs", body)
    return _done(request, "orgs", f"Organisation “{org.get('name', name)}” created.")


@router.post("/orgs/{org_id}")
async def update_org(request: Request, api: Api, org_id: str) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    body = {
        "sso_group": (fields.get("sso_group") or "").strip() or None,
        "limits": parse_limits(fields),
        "budgets": parse_budgets(fields),
        "excluded_models": [v for v in form.getlist("excluded_models") if isinstance(v, str) and v],
        "model_limits": parse_model_limits(fields),
    }
    await api.directory.patch(f"/api/orgs/{q(org_id)}", body)
    return _done(request, "orgs", "Organisation saved.")


@router.post("/users")
async def create_user(
    request: Request,
    api: Api,
    org_id: Annotated[str, Form()],
    email: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    org_admin: Annotated[str, Form()] = "",
) -> Response:
    body = {
        "email": require_text(email, "Email", 200, "email"),
        "name": name.strip(),
        "org_id": org_id,
        "org_admin": org_admin == "on",
    }
    user = await api.directory.post("/api/users", body)
    return _done(request, "users", f"User {user.get('email', email)} added.")


@router.post("/endpoints")
async def create_endpoint(
    request: Request,
    api: Api,
    slug: Annotated[str, Form()] = "",
    url: Annotated[str, Form()] = "",
    provider: Annotated[str, Form()] = "openai",
    api_key_env: Annotated[str, Form()] = "",
    responses: Annotated[str, Form()] = "",
) -> Response:
    body = {
        "slug": require_text(slug, "Slug", 64, "slug"),
        "url": require_text(url, "URL", 500, "url"),
        "provider": provider,
        "api_key_env": api_key_env.strip() or None,
        "responses": responses == "on",
    }
    await api.directory.post("/api/endpoints", body)
    return _done(request, "endpoints", f"Endpoint “{body['slug']}” added.")


@router.post("/endpoints/{slug}")
async def update_endpoint(
    request: Request,
    api: Api,
    slug: str,
    url: Annotated[str, Form()] = "",
    provider: Annotated[str, Form()] = "",
    api_key_env: Annotated[str, Form()] = "",
    responses: Annotated[str, Form()] = "",
) -> Response:
    if provider not in _PROVIDERS:
        raise FormError(f"Provider must be one of {', '.join(_PROVIDERS)}.")
    # api_key_env "" clears the key: the directory stores only the variable's name, never its value.
    body = {
        "url": parse_url(url),
        "provider": provider,
        "api_key_env": parse_api_key_env(api_key_env),
        "responses": responses == "on",  # an unticked checkbox is not sent at all
    }
    await api.directory.patch(f"/api/endpoints/{q(slug)}", body)
    return _done(request, "endpoints", f"Endpoint “{slug}” saved.")


@router.post("/endpoints/{slug}/delete")
async def delete_endpoint(request: Request, api: Api, slug: str) -> Response:
    await api.directory.delete(f"/api/endpoints/{q(slug)}")
    return _done(request, "endpoints", f"Endpoint “{slug}” removed.")


@router.post("/models")
async def create_model(
    request: Request,
    api: Api,
    name: Annotated[str, Form()] = "",
    endpoint: Annotated[str, Form()] = "",
    upstream_model: Annotated[str, Form()] = "",
    input_price_per_million: Annotated[str, Form()] = "",
    output_price_per_million: Annotated[str, Form()] = "",
    aliases: Annotated[str, Form()] = "",
) -> Response:
    body = {
        "name": require_text(name, "Model name", 200, "name"),
        "endpoint": require_text(endpoint, "Endpoint", 64, "endpoint"),
        "upstream_model": upstream_model.strip() or None,
        "input_price_per_million": input_price_per_million.strip() or None,
        "output_price_per_million": output_price_per_million.strip() or None,
        "aliases": _aliases(aliases),
    }
    await api.directory.post("/api/models", body)
    return _done(request, "models", f"Model “{body['name']}” added.")


@router.post("/models/{name}")
async def update_model(request: Request, api: Api, name: str) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    fallbacks = [v for v in form.getlist("fallbacks") if isinstance(v, str) and v]
    if name in fallbacks:
        raise FormError("A model cannot be its own fallback.")
    body: dict[str, object] = {
        "endpoint": require_text(fields.get("endpoint"), "Endpoint", 64, "endpoint"),
        "upstream_model": require_text(fields.get("upstream_model"), "Upstream model", 200, "upstream_model"),
        "fallbacks": fallbacks,
    }
    # The form shows the current prices: a field left blank removes that price (cost unknown), 0 makes
    # the model free. Sent as null, which the directory takes as "remove".
    for key, label in (
        ("input_price_per_million", "Input $ per 1M tokens"),
        ("output_price_per_million", "Output $ per 1M tokens"),
        *TOKEN_PRICE_FIELDS,
    ):
        body[key] = parse_price(fields.get(key), label, key)
    body["aliases"] = _aliases(fields.get("aliases", ""))
    await api.directory.patch(f"/api/models/{q(name)}", body)
    return _done(request, "models", f"Model “{name}” saved.")


def _aliases(text: str) -> list[str]:
    """Comma- or space-separated names; the directory checks each one."""
    return [a for a in text.replace(",", " ").split() if a]


@router.post("/models/{name}/delete")
async def delete_model(request: Request, api: Api, name: str) -> Response:
    await api.directory.delete(f"/api/models/{q(name)}")
    return _done(request, "models", f"Model “{name}” removed.")


@router.post("/terms")
async def publish_terms(
    request: Request, api: Api, version: Annotated[str, Form()] = "", url: Annotated[str, Form()] = ""
) -> Response:
    body = {
        "version": require_text(version, "Version", 50, "version"),
        "url": require_text(url, "URL", 500, "url"),
    }
    await api.directory.post("/api/terms", body)
    return _done(request, "terms", f"Terms of service {body['version']} published.")


@router.post("/mcp-servers")
async def register_mcp_server(request: Request, api: Api) -> Response:
    form = await request.form()
    body = {
        "name": require_text(str(form.get("name") or ""), "Name", 100, "name"),
        "url": require_text(str(form.get("url") or ""), "URL", 500, "url"),
        "allowed_team_ids": [v for v in form.getlist("allowed_team_ids") if isinstance(v, str) and v],
    }
    await api.directory.post("/api/mcp-servers", body)
    return _done(request, "mcp", f"MCP server “{body['name']}” registered.")


@router.post("/mcp-servers/{name}/delete")
async def remove_mcp_server(request: Request, api: Api, name: str) -> Response:
    await api.directory.delete(f"/api/mcp-servers/{q(name)}")
    return _done(request, "mcp", f"MCP server “{name}” removed.")


@router.get("/audit")
async def audit_page(
    request: Request,
    viewer: AdminViewer,
    api: Api,
    actor: Annotated[str | None, Query(max_length=320)] = None,
    aggregate_id: Annotated[str | None, Query(max_length=100)] = None,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    type: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    at: Annotated[str | None, Query(max_length=40)] = None,
    state_id: Annotated[str | None, Query(max_length=100)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    data = await load_audit_page(
        api,
        (actor or "").strip() or None,
        (aggregate_id or "").strip() or None,
        parse_moment(since),
        parse_moment(until),
        parse_moment(at),
        (state_id or "").strip() or None,
        (kind or "").strip() or None,
        (type or "").strip() or None,
        page,
    )
    return render(request, "audit.html", data=data, page_section="audit")


@router.get("/dead-letters")
async def dead_letters_page(request: Request, viewer: AdminViewer, api: Api, after: int = 0) -> Response:
    page = await load_dead_letters_page(api, max(after, 0))
    return render(request, "dead_letters.html", data=page, page_section="admin")


# Accounting decides on the session's claims (an Admin's until the access token expires): the UI's check
# of the viewer's current roles is what refuses a demoted Admin at once.
@router.post("/dead-letters/redrive")
async def redrive_all_dead_letters(request: Request, viewer: AdminViewer, api: Api) -> Response:
    stored, failed = await redrive_all(api)
    if failed:
        reasons = "; ".join(f"{f['id']}: {str(f['reason']).splitlines()[0][:120]}" for f in failed[:3])
        message = f"{stored} re-driven and stored; {len(failed)} still failing ({reasons})."
        return redirect(request, "/admin/dead-letters", Flash("error", message))
    return redirect(request, "/admin/dead-letters", Flash("success", f"{stored} re-driven and stored."))


@router.post("/dead-letters/{letter_id}/redrive")
async def redrive_dead_letter(request: Request, viewer: AdminViewer, api: Api, letter_id: int) -> Response:
    try:
        await redrive_one(api, letter_id)
    except ApiError as exc:
        if exc.status not in (404, 409):
            raise
        return redirect(request, "/admin/dead-letters", Flash("error", exc.detail))
    return redirect(
        request, "/admin/dead-letters", Flash("success", f"Dead letter {letter_id} re-driven and stored.")
    )
