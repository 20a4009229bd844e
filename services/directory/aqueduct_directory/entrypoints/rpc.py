"""NATS request/reply: the auth service resolves a signed-in identity to a directory user."""

from __future__ import annotations

import json
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.domain.errors import DirectoryError
from aqueduct_libs import names

__all__ = ["handle_sign_in", "serve_sign_in"]

log = logging.getLogger(__name__)


def handle_sign_in(directory: DirectoryApp, request: dict[str, Any]) -> dict[str, Any]:
    """``{"subject", "email", "name", "groups", "admin"}`` -> the user and roles, or ``{"error"}``."""
    try:
        return directory.sign_in(
            subject=str(request.get("subject") or ""),
            email=str(request.get("email") or ""),
            name=str(request.get("name") or ""),
            groups=[str(g) for g in request.get("groups") or []],
            admin=bool(request.get("admin", False)),
            email_verified=request.get("email_verified") is True,
            renewal=request.get("renewal") is True,
        )
    except DirectoryError as exc:
        return {"error": exc.detail, "code": exc.code}


async def serve_sign_in(nc: NATS, directory: DirectoryApp) -> Subscription:
    async def on_request(msg: Msg) -> None:
        try:
            answer = handle_sign_in(directory, json.loads(msg.data or b"{}"))
        except (ValueError, TypeError) as exc:
            answer = {"error": f"malformed sign-in request: {exc}", "code": "invalid_input"}
        except Exception:  # an answer, not a timeout, even when something unexpected broke
            log.exception("sign-in request failed")
            answer = {"error": "the directory could not resolve the user", "code": "internal"}
        await msg.respond(json.dumps(answer).encode())

    # A queue group, so several directory replicas never answer the same request twice.
    return await nc.subscribe(names.DIRECTORY_RPC_SIGN_IN, queue="directory", cb=on_request)
