"""``/v1/batches``: create from an uploaded JSONL file, retrieve, list and cancel, as OpenAI defines them.

Creating validates every line, then queues one work-queue message per line for the batch workers
(``python -m aqueduct_proxy.batches``), which run them within the owner's limits and budgets.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from aqueduct_proxy.batches.domain import ENDPOINTS, Batch, parse_input
from aqueduct_proxy.batches.settings import BatchSettings
from aqueduct_proxy.batches.store import BatchStore
from aqueduct_proxy.domain.errors import BadRequestError
from aqueduct_proxy.files.domain import owner_of
from aqueduct_proxy.files.edge import Authenticate, json_response
from aqueduct_proxy.files.store import FileStore

__all__ = ["setup_batches"]

_COMPLETION_WINDOWS = {"24h": 86400}


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(payload, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return payload


def setup_batches(
    app: web.Application,
    authenticate: Authenticate,
    files: FileStore,
    store: BatchStore,
    settings: BatchSettings,
) -> None:
    """Add the batch routes to ``app``; both stores must be started before the first request."""

    async def create(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))
        payload = await _json(request)
        endpoint, window = payload.get("endpoint"), payload.get("completion_window")
        if not isinstance(endpoint, str) or endpoint not in ENDPOINTS:
            raise BadRequestError(
                f"Unsupported endpoint '{endpoint}'; use one of {sorted(ENDPOINTS)}.", param="endpoint"
            )
        if not isinstance(window, str) or window not in _COMPLETION_WINDOWS:
            raise BadRequestError("completion_window must be '24h'.", param="completion_window")
        metadata = payload.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise BadRequestError("metadata must map strings to strings.", param="metadata")
        input_file_id = payload.get("input_file_id")
        if not isinstance(input_file_id, str):
            raise BadRequestError("Missing required parameter: 'input_file_id'.", param="input_file_id")
        source = await files.get(owner_of(grant), input_file_id)
        if source.purpose != "batch":
            raise BadRequestError(
                f"The file {input_file_id} was not uploaded with purpose 'batch'.", param="input_file_id"
            )
        batch_id = Batch.new_id()
        lines = parse_input(
            await files.content(owner_of(grant), input_file_id),
            batch_id,
            owner_of(grant),
            endpoint,
            settings.max_lines,
        )
        now = int(time.time())
        batch = Batch(
            id=batch_id,
            owner=owner_of(grant),
            user_id=grant.user_id,
            token_id=grant.token_id,
            token_hash=grant.token_hash,
            service_account_id=grant.service_account_id,
            team_id=grant.team_id,
            org_id=grant.org_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            created_at=now,
            expires_at=now + _COMPLETION_WINDOWS[window],
            total=len(lines),
            metadata=metadata,
        )
        await store.create(batch)
        await store.enqueue(lines)
        batch = await store.mutate(
            batch.owner,
            batch.id,
            lambda b: (
                b.model_copy(update={"status": "in_progress", "in_progress_at": int(time.time())})
                if b.status == "validating"
                else None
            ),
        )
        return json_response(batch.to_openai())

    async def retrieve(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))
        return json_response((await store.get(owner_of(grant), request.match_info["batch_id"])).to_openai())

    async def listing(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))
        batches = sorted(await store.list(owner_of(grant)), key=lambda b: (b.created_at, b.id), reverse=True)
        after = request.query.get("after")
        if after:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = max(1, min(int(request.query.get("limit", 20)), 100))
        except ValueError:
            raise BadRequestError("'limit' must be an integer.", param="limit") from None
        page = batches[:limit]
        return json_response(
            {
                "object": "list",
                "data": [b.to_openai() for b in page],
                "has_more": len(batches) > limit,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def cancel(request: web.Request) -> web.Response:
        grant = authenticate(request.headers.get("Authorization"))

        def cancelling(b: Batch) -> Batch | None:
            if b.status not in ("validating", "in_progress"):
                return None
            return b.model_copy(update={"status": "cancelling", "cancelling_at": int(time.time())})

        batch = await store.mutate(owner_of(grant), request.match_info["batch_id"], cancelling)
        if batch.status == "cancelling":
            await store.drop_queued(batch.id)  # lines in flight finish; the worker then finalizes
        return json_response(batch.to_openai())

    app.add_routes(
        [
            web.post("/v1/batches", create),
            web.get("/v1/batches", listing),
            web.get("/v1/batches/{batch_id}", retrieve),
            web.post("/v1/batches/{batch_id}/cancel", cancel),
        ]
    )
