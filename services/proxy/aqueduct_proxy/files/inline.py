"""File parts of chat and Responses requests turned into text, for upstreams that cannot read files.

``inline_file_parts`` is the rule (a body in, a body out); ``setup_file_inlining`` applies it to the
proxy's model routes, before the request is routed and forwarded, when the target endpoint is not
listed as reading files natively (``AQUEDUCT_PROXY_FILES_NATIVE_FILE_ENDPOINTS``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from aqueduct_proxy.domain.errors import BadRequestError, InvalidTokenError
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.entrypoints.front import serve_through_aiohttp_when
from aqueduct_proxy.files.domain import owner_of
from aqueduct_proxy.files.edge import Authenticate
from aqueduct_proxy.files.extract import UnreadableFileError, extract_text
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore

__all__ = ["LoadFile", "has_file_parts", "inline_file_parts", "setup_file_inlining"]

# file id -> (bytes, filename); raises the files API's not-found error for an unknown or foreign id.
LoadFile = Callable[[str], Awaitable[tuple[bytes, str]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ROUTES = ("/v1/chat/completions", "/v1/responses")


def _decode_data(file_data: str) -> tuple[bytes, str]:
    """``data:<mime>;base64,<data>`` (or bare base64) -> bytes and mime type."""
    mime = ""
    if file_data.startswith("data:"):
        header, _, file_data = file_data.partition(",")
        mime = header[5:].split(";", 1)[0]
    try:
        return base64.b64decode(file_data, validate=True), mime
    except (binascii.Error, ValueError):
        raise BadRequestError(
            "file_data must be base64 (a data: URL such as data:application/pdf;base64,...).",
            param="file_data",
        ) from None


async def _text_of(spec: dict[str, Any], load_file: LoadFile | None) -> str:
    filename = str(spec.get("filename") or "")
    if isinstance(spec.get("file_data"), str):
        data, mime = _decode_data(spec["file_data"])
    elif isinstance(spec.get("file_id"), str):
        if load_file is None:
            raise BadRequestError("Files cannot be referenced by id here.", param="file_id")
        data, stored_name = await load_file(spec["file_id"])
        filename, mime = filename or stored_name, ""
    elif "file_url" in spec:
        raise UnreadableFileError("The gateway does not fetch files by URL; send file_data or a file_id.")
    else:
        raise BadRequestError("A file part needs file_data or file_id.", param="file")
    # Parsing a large PDF takes a while: keep it off the event loop.
    text = await asyncio.to_thread(extract_text, data, filename, mime)
    return f"[Content of the file {filename or 'attached'}]\n{text}"


async def _inline_content(content: Any, load_file: LoadFile | None) -> Any:
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "file" and isinstance(part.get("file"), dict):
            out.append({"type": "text", "text": await _text_of(part["file"], load_file)})
        elif isinstance(part, dict) and part.get("type") == "input_file":
            out.append({"type": "input_text", "text": await _text_of(part, load_file)})
        else:
            out.append(part)
    return out


def has_file_parts(raw: bytes) -> bool:
    """A cheap look at the raw body, so requests without files are not parsed twice."""
    return b"file_data" in raw or b"file_id" in raw or b"file_url" in raw


async def inline_file_parts(body: dict[str, Any], load_file: LoadFile | None) -> dict[str, Any]:
    """The same request with every file part (chat ``{"type": "file"}``, Responses ``input_file``)
    replaced by a text part holding the file's text. ``body`` itself is not changed."""
    result = dict(body)
    for field in ("messages", "input"):
        items = body.get(field)
        if isinstance(items, list):
            result[field] = [
                {**item, "content": await _inline_content(item.get("content"), load_file)}
                if isinstance(item, dict)
                else item
                for item in items
            ]
    return result


def setup_file_inlining(
    app: web.Application,
    authenticate: Authenticate,
    snapshot: Snapshot,
    store: FileStore,
    settings: FilesSettings,
) -> None:
    """Rewrite file parts of model requests whose endpoint cannot read files; add before the app starts."""
    native = frozenset(s.strip() for s in settings.native_file_endpoints.split(",") if s.strip())

    def target_endpoint(path: str, body: dict[str, Any]) -> str | None:
        if path.startswith("/v1/"):
            model = body.get("model")
            route = snapshot.models.get(model) if isinstance(model, str) else None
            return route.endpoint if route else None
        return path.split("/", 2)[1]  # /{slug}/v1/...

    @web.middleware
    async def inline_files(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method != "POST"
            or not request.path.endswith(_ROUTES)
            or request.content_type != "application/json"
        ):
            return await handler(request)
        raw = await request.read()
        if not has_file_parts(raw):
            return await handler(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return await handler(request)  # the route answers with its own error
        endpoint = target_endpoint(request.path, body) if isinstance(body, dict) else None
        if endpoint is None or endpoint in native:
            return await handler(request)
        try:
            grant = authenticate(request.headers.get("Authorization"))
        except InvalidTokenError:
            return await handler(request)  # the route refuses the token in the usual way

        async def load(file_id: str) -> tuple[bytes, str]:
            record = await store.get(owner_of(grant), file_id)
            return await store.content(owner_of(grant), file_id), record.filename

        body = await inline_file_parts(body, load)
        # aiohttp keeps a read body here and hands it to later reads: the route sees the rewritten one.
        request._read_bytes = orjson.dumps(body)
        return await handler(request)

    app.middlewares.append(inline_files)
    # The lean front end leaves to aiohttp (this middleware) every request it might rewrite.
    serve_through_aiohttp_when(
        app, inline_files, lambda path, headers, raw: path.endswith(_ROUTES) and has_file_parts(raw)
    )
