"""HTTP routes of the data plane (aiohttp): translate requests into gateway calls and answers back.

Errors are mapped once, in ``_errors``, into OpenAI's error body so the official SDK raises its usual
exception classes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aqueduct_libs.request_id import HEADER as REQUEST_ID_HEADER
from aqueduct_libs.request_id import aiohttp_request_id, setup_aiohttp_request_ids
from aqueduct_proxy.application.gateway import Call, Gateway
from aqueduct_proxy.domain.errors import BadRequestError, PayloadTooLargeError, ProxyError, RouteNotFoundError
from aqueduct_proxy.entrypoints.front import FRONT_END as _FRONT_END
from aqueduct_proxy.entrypoints.front import FrontEndRules
from aqueduct_proxy.entrypoints.openapi import OPENAPI_DOCUMENT
from aqueduct_proxy.entrypoints.relay import relay
from aqueduct_proxy.wire.anthropic import anthropic_model_list, proxy_error_body
from aqueduct_proxy.wire.headers import forwarded_headers
from aqueduct_proxy.wire.messages import count_tokens, messages
from aqueduct_proxy.wire.responses_route import has_responses_api, translated_responses

__all__ = ["build_app", "errors_middleware", "front_end_rules"]

log = logging.getLogger(__name__)

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)

JSON_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/audio/speech",
    "/v1/images/generations",
)
MULTIPART_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# Routes that answer in Anthropic's format, errors included (its SDKs read {"type": "error", ...}).
_ANTHROPIC_ROUTES = frozenset(
    {
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/{slug}/v1/messages",
        "/{slug}/v1/messages/count_tokens",
    }
)

# Refusals before any route is matched (a wrong method, an unknown tail such as /v1/messages/batches or
# /v1/messages/) are in Anthropic's format too when the path is under Anthropic's Messages API.
_ANTHROPIC_PATH = re.compile(r"^(?:/[^/]+)?/v1/messages(?:/|$)")


def _anthropic(request: web.Request, route: str) -> bool:
    return route in _ANTHROPIC_ROUTES or _ANTHROPIC_PATH.match(request.path) is not None


def _error_response(error: ProxyError, anthropic: bool = False) -> web.Response:
    return web.Response(
        body=orjson.dumps(proxy_error_body(error) if anthropic else error.body()),
        status=error.status,
        headers=error.headers,
        content_type="application/json",
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
    try:
        response = await handler(request)
    except ProxyError as error:
        response = _error_response(error, _anthropic(request, route))
    except HttpProcessingError:
        # aiohttp's parser read a malformed body part (a multipart part with a bad header, say) only when
        # the handler asked for it; that is the client's error, not the gateway's.
        response = _error_response(
            BadRequestError("The request body is malformed and could not be parsed."),
            _anthropic(request, route),
        )
    except web.HTTPRequestEntityTooLarge:
        response = _error_response(
            PayloadTooLargeError("The request body is too large."), _anthropic(request, route)
        )
    except web.HTTPNotFound:
        response = _error_response(
            RouteNotFoundError(f"Unknown request URL: {request.method} {request.path}."),
            _anthropic(request, route),
        )
    except web.HTTPMethodNotAllowed:
        response = _error_response(
            BadRequestError(f"Method {request.method} is not allowed on {request.path}."),
            _anthropic(request, route),
        )
    except Exception:
        log.exception("unexpected error on %s", request.path)
        response = _error_response(
            ProxyError("The gateway failed to handle the request."), _anthropic(request, route)
        )
    gateway.metrics.observe_request(route, response.status, time.perf_counter() - started)
    return response


def _forward_headers(request: web.Request) -> dict[str, str]:
    return _forwarded(request.headers)


def _forwarded(given: Mapping[str, str]) -> dict[str, str]:
    # The SDK's x-stainless-*, test hints like x-fake-delay and OpenAI-* pass; credentials do not.
    headers = forwarded_headers(given, "openai-")
    if "Accept" in given:
        headers["Accept"] = given["Accept"]
    return headers


async def _json_body(request: web.Request) -> dict[str, Any]:
    return _json_object(request.content_type, await request.read())


def _json_object(content_type: str, raw: bytes) -> dict[str, Any]:
    if content_type != "application/json":
        raise BadRequestError(
            f"Unsupported content type '{content_type}'; send a JSON body (application/json)."
        )
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(payload, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return payload


async def _form_body(request: web.Request) -> list[tuple[str, Any]]:
    if request.content_type != "multipart/form-data":
        raise BadRequestError("This route expects multipart/form-data (a file upload).")
    try:
        form = await request.post()
    except web.HTTPException:
        raise  # 413: the body is over the size limit
    except ValueError as exc:  # a broken multipart body (no closing boundary, bad headers)
        raise BadRequestError(f"The multipart body cannot be read: {exc}.") from exc
    return list(form.items())


async def _forward(request: web.Request, gateway: Gateway, call: Call) -> web.StreamResponse:
    call.request_id = aiohttp_request_id(request)
    headers = _forward_headers(request)
    if call.request_id:  # the upstream's logs can then be matched with ours
        headers[REQUEST_ID_HEADER] = call.request_id
    return await gateway.forward(call, request.method, request.query_string, headers, partial(relay, request))


def _model_route(api_path: str, multipart: bool) -> Handler:
    upstream_path = api_path[len("/v1") :]

    async def handle(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GATEWAY]
        grant = gateway.authenticate(request.headers.get("Authorization"))
        if multipart:
            call = gateway.prepare(grant, api_path, upstream_path, form=await _form_body(request))
        else:
            call = gateway.prepare(grant, api_path, upstream_path, payload=await _json_body(request))
        return await _forward(request, gateway, call)

    return handle


def _anthropic_credentials(request: web.Request) -> str | None:
    """Anthropic's SDKs send the key as ``x-api-key``; Claude Code's ``ANTHROPIC_AUTH_TOKEN`` as a bearer."""
    key = request.headers.get("x-api-key")
    return f"Bearer {key}" if key else request.headers.get("Authorization")


def _anthropic_route(serve: Callable[..., Awaitable[web.StreamResponse]]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GATEWAY]
        grant = gateway.authenticate(_anthropic_credentials(request))
        payload = await _json_body(request)
        return await serve(request, gateway, grant, payload, request.match_info.get("slug"))

    return handle


async def _responses(request: web.Request) -> web.StreamResponse:
    """``/v1/responses`` (and ``/{slug}/v1/responses``): forwarded to endpoints that have the Responses
    API, translated to chat completions for the others."""
    gateway = request.app[GATEWAY]
    grant = gateway.authenticate(request.headers.get("Authorization"))
    payload = await _json_body(request)
    slug = request.match_info.get("slug")
    api_path = f"/{slug}/v1/responses" if slug else "/v1/responses"
    call = gateway.prepare(grant, api_path, "/responses", payload=payload, slug=slug)
    assert call.route is not None
    if has_responses_api(call.route.endpoint):
        return await _forward(request, gateway, call)
    return await translated_responses(request, gateway, call, payload, _forward_headers(request))


async def _models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    grant = gateway.authenticate(_anthropic_credentials(request))
    listed = gateway.list_models(grant)
    if "anthropic-version" in request.headers:  # Anthropic's SDKs and Claude Code list models too
        listed = anthropic_model_list(listed)
    return web.json_response(listed, dumps=lambda v: orjson.dumps(v).decode())


async def _model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}`` (the SDKs' ``models.retrieve``): one model this token may use, found by
    its name or an alias; any other name is 404 ``model_not_found``, in Anthropic's format for its SDKs."""
    gateway = request.app[GATEWAY]
    anthropic = "anthropic-version" in request.headers
    try:
        grant = gateway.authenticate(_anthropic_credentials(request))
        found = gateway.retrieve_model(grant, request.match_info["model"])
    except ProxyError as error:
        return _error_response(error, anthropic)
    if anthropic:
        found = anthropic_model_list({"data": [found]})["data"][0]
    return web.json_response(found, dumps=lambda v: orjson.dumps(v).decode())


# What ``/{slug}/v1/...`` forwards. Anything else under an endpoint (an upstream's files, batches,
# fine-tuning or assistants APIs) would act with the organisation's shared provider key on objects of
# every user, so it is refused. vLLM's own extras (tokenize, score, rerank, ...) are allowed.
_SLUG_TAILS = re.compile(
    r"^(models(/[^/]+)?|chat/completions|completions|embeddings|responses|moderations"
    r"|audio/(speech|transcriptions|translations)|images/(generations|edits|variations)"
    r"|tokenize|detokenize|score|rerank|classify|pooling)$"
)
# Tails that cost nothing (besides models and models/{model}): a used-up budget does not stop them.
_SLUG_FREE_TAILS = frozenset({"tokenize", "detokenize"})
# Tails that take a file upload, as their /v1/ routes do.
_SLUG_MULTIPART_TAILS = frozenset({"audio/transcriptions", "audio/translations"})
# Tails whose requests name a model: the model is checked against the token like on /v1/ routes.
_SLUG_MODEL_TAILS = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "responses",
        "moderations",
        "audio/speech",
        "audio/transcriptions",
        "audio/translations",
        "images/generations",
        "images/edits",
        "images/variations",
        "tokenize",
        "detokenize",
        "score",
        "rerank",
        "classify",
        "pooling",
    }
)


async def _endpoint_route(request: web.Request) -> web.StreamResponse:
    """``/{slug}/v1/...``: the rest of the path goes to that endpoint as it is."""
    gateway = request.app[GATEWAY]
    slug, tail = request.match_info["slug"], request.match_info["tail"]
    # Under Anthropic's Messages API (a path its routes do not serve), its clients' x-api-key is the key.
    anthropic = tail == "messages" or tail.startswith("messages/")
    grant = gateway.authenticate(
        _anthropic_credentials(request) if anthropic else request.headers.get("Authorization")
    )
    if not _SLUG_TAILS.match(tail):
        raise RouteNotFoundError(f"The gateway does not forward '/{slug}/v1/{tail}'.")
    api_path, upstream_path = f"/{slug}/v1/{tail}", f"/{tail}"
    kwargs: dict[str, Any] = {"slug": slug, "model_required": tail in _SLUG_MODEL_TAILS}
    if tail in _SLUG_MULTIPART_TAILS or request.content_type == "multipart/form-data":
        kwargs["form"] = await _form_body(request)  # image edits and variations may upload too
    elif tail in _SLUG_MODEL_TAILS:
        # The same body rules as the /v1/ routes (JSON object, application/json), so the model, token
        # count and price always apply.
        kwargs["payload"] = await _json_body(request)
    elif request.body_exists:
        # Not ``can_read_body``: a middleware (file inlining) may have read the body already; aiohttp
        # keeps it and ``read()`` returns it again.
        raw = await request.read()
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        # A JSON object is read as one whatever its declared content type; other bodies pass as bytes.
        if isinstance(payload, dict):
            kwargs["payload"] = payload
        else:
            kwargs["raw"] = raw
    call = gateway.prepare(grant, api_path, upstream_path, **kwargs)
    call.free = tail in _SLUG_FREE_TAILS or tail.startswith("models")  # costs nothing: no budget applies
    return await _forward(request, gateway, call)


errors_middleware = _errors  # others place their middlewares after it (jupyterhub.wiring)


def front_end_rules(app: web.Application, max_header_bytes: int) -> FrontEndRules | None:
    """What the lean front end needs, or None when the app has a middleware it does not know (or a
    response hook other than the request id's): then aiohttp serves every request."""
    front = app.get(_FRONT_END)
    if front is None or front["off"]:
        return None
    known = front["known"]
    unknown = [m for m in app.middlewares if m not in known]
    if unknown or len(app.on_response_prepare) != 1:
        log.info("lean front end off: middlewares it does not know %s", unknown)
        return None
    return FrontEndRules(
        gateway=app[GATEWAY],
        max_body_bytes=front["max_body_bytes"],
        max_line_bytes=max_header_bytes,
        handoffs=[needs for m, needs in known.items() if needs is not None and m in app.middlewares],
        error_response=_error_response,
        forward_headers=_forwarded,
        json_object=_json_object,
    )


def build_app(
    gateway: Gateway, ready: Callable[[], bool], max_body_bytes: int, front_end: bool = True
) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=max_body_bytes)
    setup_aiohttp_request_ids(app)
    app[GATEWAY] = gateway
    # The request id's middleware and the errors' act on the front end's requests as they do here.
    app[_FRONT_END] = {
        "off": not front_end,
        "max_body_bytes": max_body_bytes,
        "known": dict.fromkeys(app.middlewares),
    }
    metrics_registry = gateway.metrics.registry
    openapi = orjson.dumps(OPENAPI_DOCUMENT)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def metrics(request: web.Request) -> web.Response:
        if gateway.publisher is not None:
            gateway.metrics.usage_buffered.set(gateway.publisher.buffered)
        response = web.Response(body=generate_latest(metrics_registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    routes = [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/openapi.json", openapi_json),
        web.get("/v1/models", _models),
        web.get("/v1/models/{model}", _model),
    ]
    routes += [web.post(path, _model_route(path, multipart=False)) for path in JSON_ROUTES]
    routes += [web.post(path, _model_route(path, multipart=True)) for path in MULTIPART_ROUTES]
    for prefix in ("/v1", "/{slug}/v1"):
        routes.append(web.post(prefix + "/responses", _responses))
        routes.append(web.post(prefix + "/messages", _anthropic_route(messages)))
        routes.append(web.post(prefix + "/messages/count_tokens", _anthropic_route(count_tokens)))
    routes.append(web.route("*", "/{slug}/v1/{tail:.+}", _endpoint_route))
    app.add_routes(routes)
    return app
