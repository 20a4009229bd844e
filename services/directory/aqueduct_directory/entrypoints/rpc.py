"""NATS request/reply: the auth service resolves a signed-in identity to a directory user.

A FastStream handler in a queue group, so several directory replicas never answer one request twice.
Every request gets an answer, never a timeout: a refusal, a malformed request and an unexpected failure
are each answered with a ``SignInRefusal``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fast_depends.exceptions import ValidationError as DependsValidationError
from faststream import Context
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsRouter
from pydantic import ValidationError

from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.domain.errors import DirectoryError
from aqueduct_libs import names
from aqueduct_libs.rpc import SignInRefusal, SignInRequest

__all__ = ["DIRECTORY", "handle_sign_in", "on_sign_in", "sign_in_router"]

log = logging.getLogger(__name__)

# The broker's context holds the application under this name (``DirectoryService.start``).
DIRECTORY = "directory"

errors = ExceptionMiddleware()


@errors.add_handler(ValidationError, publish=True)
@errors.add_handler(DependsValidationError, publish=True)
@errors.add_handler(ValueError, publish=True)
def _malformed(exc: Exception) -> dict[str, Any]:
    return SignInRefusal(error=f"malformed sign-in request: {exc}", code="invalid_input").model_dump()


@errors.add_handler(Exception, publish=True)  # FastStream's own control flow is re-raised before
def _broken(exc: Exception) -> dict[str, Any]:
    log.error("sign-in request failed", exc_info=exc)
    return SignInRefusal(error="the directory could not resolve the user", code="internal").model_dump()


def handle_sign_in(directory: DirectoryApp, request: SignInRequest) -> dict[str, Any]:
    """The user and roles, or a ``SignInRefusal``."""
    try:
        return directory.sign_in(
            subject=request.subject,
            email=request.email,
            name=request.name,
            groups=list(request.groups),
            admin=request.admin,
            email_verified=request.email_verified,
            renewal=request.renewal,
        )
    except DirectoryError as exc:
        return SignInRefusal(error=exc.detail, code=exc.code).model_dump()


async def on_sign_in(
    request: SignInRequest, directory: Annotated[DirectoryApp, Context(DIRECTORY)]
) -> dict[str, Any]:
    """Answer with the resolved (or provisioned) ``DirectoryUser``, or a ``SignInRefusal``."""
    return handle_sign_in(directory, request)


def sign_in_router() -> NatsRouter:
    """The handler for one broker (a router belongs to one broker; tests run two directories at once)."""
    router = NatsRouter(middlewares=(errors,))
    router.subscriber(names.DIRECTORY_RPC_SIGN_IN, queue="directory", title="directory.rpc.v1.sign_in")(
        on_sign_in
    )
    return router
