"""Errors mapped once, at the edge: what the user sees when an API says no or the session is gone."""

from __future__ import annotations

import json
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

from aqueduct_ui.adapters.api import ApiError
from aqueduct_ui.domain.forms import FormError
from aqueduct_ui.entrypoints.web.cookies import CSRF_FIELD, Flash
from aqueduct_ui.entrypoints.web.deps import CsrfError, SignInRequired
from aqueduct_ui.entrypoints.web.render import back_url, redirect, render

__all__ = ["install_error_handlers"]

_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    409: "Refused",
    422: "Not accepted",
    503: "Service unavailable",
}


def _sign_in(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = back_url(request)
    return redirect(request, f"/login?next={quote(target, safe='')}")


async def _on_sign_in_required(request: Request, exc: Exception) -> Response:
    return _sign_in(request)


async def _on_csrf(request: Request, exc: Exception) -> Response:
    flash = Flash("error", "The form had expired. Please try again.")
    return redirect(request, back_url(request), flash)


# The flash travels in a cookie (4 KB at most, sealed): beyond this the typed values are not kept.
_MAX_KEPT_BYTES = 2000


async def refused_form(request: Request, message: str, field: str | None) -> Flash:
    """An error flash that carries the refused form back: what the user typed (never a password or the
    CSRF token) and the field the message belongs to, for the page to show them in place."""
    try:
        form = await request.form()  # parsed once already by the route; Starlette keeps it
        pairs = list(form.multi_items())
    except Exception:
        pairs = []
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if isinstance(value, str) and name != CSRF_FIELD and "password" not in name:
            values.setdefault(name, []).append(value[:500])
    if len(json.dumps(values)) > _MAX_KEPT_BYTES:
        values = {}
    state = {"action": request.url.path, "values": values, "field": field, "message": message}
    return Flash("error", message, form=state)


async def _on_form_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FormError)
    return redirect(request, back_url(request), await refused_form(request, str(exc), exc.field))


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status == 401:
        # The API no longer accepts this session (revoked, roles changed): drop the access token so the
        # next request refreshes it or, failing that, asks to sign in, instead of looping.
        response = _sign_in(request)
        request.app.state.ctx.cookies.clear_access(response)
        return response
    if request.method != "GET":
        # A refused action returns to the form with the API's reason (e.g. "owns a service account"),
        # next to the field it names, with what the user typed.
        return redirect(request, back_url(request), await refused_form(request, exc.detail, exc.field))
    status = exc.status if exc.status in _TITLES else 502
    return render(
        request,
        "error.html",
        status_code=status,
        title=_TITLES.get(status, "Something went wrong"),
        detail=exc.detail,
    )


async def _on_bad_request(request: Request, exc: Exception) -> Response:
    """A hand-edited link (``?page=zero``) or a form field of the wrong type: the UI's own page or flash
    naming the parameter, never FastAPI's JSON."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ())[1:]) or 'request'}: {error.get('msg', '')}"
        for error in exc.errors()
    )
    message = f"The page cannot use a value it was given ({problems})."
    if request.method != "GET":
        return redirect(request, back_url(request), Flash("error", message))
    return render(request, "error.html", status_code=400, title=_TITLES[400], detail=message)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_bad_request)
    app.add_exception_handler(SignInRequired, _on_sign_in_required)
    app.add_exception_handler(CsrfError, _on_csrf)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(FormError, _on_form_error)
