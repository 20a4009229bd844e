"""Rendering pages and redirecting with a flash message (POST-redirect-GET)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aqueduct_ui.entrypoints.web.cookies import CSRF_FIELD, Flash

__all__ = ["back_url", "create_templates", "http_href", "redirect", "render", "safe_next"]

_PACKAGE = Path(__file__).resolve().parents[2]

NAV = (
    ("tokens", "/", "Tokens"),
    ("teams", "/teams", "Teams"),
    ("models", "/models", "Models"),
    ("usage", "/usage", "Usage"),
)
ORG_ADMIN_NAV = (("users", "/users", "Users"),)
ADMIN_NAV = (("admin", "/admin", "Admin"), ("audit", "/admin/audit", "Audit"))


def _page_context(request: Request) -> dict[str, Any]:
    ctx = request.app.state.ctx
    session = getattr(request.state, "session", None)
    viewer = session.viewer if session else None
    csrf_secret = getattr(request.state, "csrf_secret", None)

    def take_flash() -> Flash | None:
        flash = getattr(request.state, "flash", None)
        if flash is not None:
            request.state.flash_shown = True
        return flash

    nav = list(NAV)
    if viewer and (viewer.admin or viewer.org_admin):
        nav += ORG_ADMIN_NAV
    if viewer and viewer.admin:
        nav += ADMIN_NAV
    return {
        "viewer": viewer,
        "nav": nav if viewer else [],
        "csrf_field": CSRF_FIELD,
        "csrf_token": ctx.cookies.csrf_token(csrf_secret) if csrf_secret else "",
        "take_flash": take_flash,
        "oidc_enabled": ctx.settings.sso_enabled,
        "oidc_label": ctx.settings.oidc_button_label,
        "proxy_url": ctx.common.proxy_url.rstrip("/"),
        "auth_url": ctx.common.auth_url.rstrip("/"),
    }


def create_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_PACKAGE / "templates"), context_processors=[_page_context])
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
    templates.env.filters["http_href"] = http_href
    return templates


def http_href(url: object) -> str:
    """A link target only when it is http(s): the directory refuses other schemes now, but a value stored
    before it did (``javascript:...``) must not become a link."""
    text = str(url or "").strip()
    return text if text.lower().startswith(("http://", "https://")) else "#"


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    templates: Jinja2Templates = request.app.state.ctx.templates
    context.setdefault("page", template.removesuffix(".html"))
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only local paths: an open redirect would let a phishing link borrow the UI's trust."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def back_url(request: Request, default: str = "/") -> str:
    """Where the form came from, when it came from this UI."""
    referer = request.headers.get("referer")
    if not referer:
        return default
    parts = urlsplit(referer)
    if parts.netloc and parts.netloc != request.url.netloc:
        return default
    return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""), default)


def redirect(request: Request, url: str, flash: Flash | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        request.app.state.ctx.cookies.set_flash(request, response, flash)
    return response
