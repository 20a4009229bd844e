"""``/v1/files``: upload, list, retrieve, content and delete, scoped to the token's owner."""

from __future__ import annotations

import tempfile
from typing import Any

from aiohttp import BodyPartReader, web

from aqueduct_proxy.domain.errors import BadRequestError
from aqueduct_proxy.files.domain import FileTooLargeError, StoredFile, check_purpose, owner_of
from aqueduct_proxy.files.edge import Authenticate, json_response
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore

__all__ = ["setup_files"]

_CHUNK = 256 * 1024


async def _receive_upload(request: web.Request, settings: FilesSettings) -> tuple[str | None, str, Any, int]:
    """Read the multipart form, spooling the file part to disk past a few MB and enforcing the size cap."""
    if request.content_type != "multipart/form-data":
        raise BadRequestError("Upload a file as multipart/form-data with the fields 'file' and 'purpose'.")
    reader = await request.multipart()
    purpose: str | None = None
    filename, spool, size = "", None, 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or "upload"
            spool = tempfile.SpooledTemporaryFile(max_size=settings.spool_memory_bytes)
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > settings.max_file_bytes:
                    spool.close()
                    raise FileTooLargeError(
                        f"The file is larger than the limit of {settings.max_file_bytes} bytes.", param="file"
                    )
                spool.write(chunk)
            spool.seek(0)
        else:
            await part.release()
    if spool is None:
        raise BadRequestError("Missing required parameter: 'file'.", param="file")
    return purpose, filename, spool, size


def _page(files: list[StoredFile], query: Any) -> dict[str, Any]:
    order = query.get("order", "desc")
    files = sorted(files, key=lambda f: (f.created_at, f.id), reverse=order != "asc")
    after = query.get("after")
    if after:
        ids = [f.id for f in files]
        files = files[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = max(1, min(int(query.get("limit", 10000)), 10000))
    except ValueError:
        raise BadRequestError("'limit' must be an integer.", param="limit") from None
    page = files[:limit]
    return {
        "object": "list",
        "data": [f.to_openai() for f in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": len(files) > limit,
    }


def setup_files(
    app: web.Application, authenticate: Authenticate, store: FileStore, settings: FilesSettings
) -> None:
    """Add the files routes to ``app``; ``store`` must be started before the first request."""

    async def upload(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))
        purpose, filename, spool, size = await _receive_upload(request, settings)
        try:
            record = await store.save(owner_of(grant), filename, check_purpose(purpose), spool, size)
        finally:
            spool.close()
        return json_response(record.to_openai())

    async def listing(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))
        files = await store.list(owner_of(grant), request.query.get("purpose") or None)
        return json_response(_page(files, request.query))

    async def retrieve(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))
        record = await store.get(owner_of(grant), request.match_info["file_id"])
        return json_response(record.to_openai())

    async def content(request: web.Request) -> web.StreamResponse:
        grant = authenticate(request.headers.get("Authorization"))
        record, spool = await store.open_content(
            owner_of(grant), request.match_info["file_id"], settings.spool_memory_bytes
        )
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = record.bytes
            await response.prepare(request)
            while chunk := spool.read(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            spool.close()

    async def delete(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))
        file_id = request.match_info["file_id"]
        await store.delete(owner_of(grant), file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    app.add_routes(
        [
            web.post("/v1/files", upload),
            web.get("/v1/files", listing),
            web.get("/v1/files/{file_id}", retrieve),
            web.get("/v1/files/{file_id}/content", content),
            web.delete("/v1/files/{file_id}", delete),
        ]
    )
