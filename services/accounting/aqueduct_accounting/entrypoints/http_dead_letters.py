"""HTTP routes of the dead letters (Admins only): list, read, re-drive one or all."""

# No ``from __future__ import annotations``: the routes' ``current_viewer`` annotation is a local variable,
# which FastAPI must see as the object itself.
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from aqueduct_accounting.adapters.dead_letters import DeadLetterNotFoundError
from aqueduct_accounting.application.dead_letters import DeadLetterAdmin, StillFailingError
from aqueduct_accounting.domain.scope import ForbiddenError, Viewer

__all__ = ["add_dead_letter_routes"]


def add_dead_letter_routes(app: FastAPI, current_viewer: Any) -> None:
    """``current_viewer``: the app's ``Annotated[Viewer, Depends(...)]`` alias."""

    def _admin(request: Request, viewer: Viewer) -> DeadLetterAdmin:
        if not viewer.admin:
            raise ForbiddenError("dead letters are for Admins")
        admin: DeadLetterAdmin | None = getattr(request.app.state.deps, "dead_letters", None)
        if admin is None:
            raise DeadLetterNotFoundError("this accounting service keeps no dead letters")
        return admin

    @app.exception_handler(DeadLetterNotFoundError)
    async def _not_found(_: Request, exc: DeadLetterNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "code": "not_found"}, status_code=404)

    @app.exception_handler(StillFailingError)
    async def _still_failing(_: Request, exc: StillFailingError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the dead letter still cannot be stored: {exc}", "code": "still_failing"},
            status_code=409,
        )

    @app.get("/api/dead-letters")
    async def list_dead_letters(
        request: Request,
        viewer: current_viewer,  # type: ignore[valid-type]
        after: Annotated[int, Query(ge=0, description="only letters with a larger id")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Messages or events that could not be stored, oldest first, each with the reason."""
        return await _admin(request, viewer).list(after, limit)

    @app.get("/api/dead-letters/{letter_id}")
    async def show_dead_letter(
        request: Request,
        letter_id: int,
        viewer: current_viewer,  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        return await _admin(request, viewer).show(letter_id)

    @app.post("/api/dead-letters/{letter_id}/redrive")
    async def redrive_dead_letter(
        request: Request,
        letter_id: int,
        viewer: current_viewer,  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        """Store it now (counted once however often re-driven); 409 with the reason if it still fails."""
        return await _admin(request, viewer).redrive(letter_id)

    @app.post("/api/dead-letters/redrive")
    async def redrive_all_dead_letters(
        request: Request,
        viewer: current_viewer,  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        """Re-drive every letter; those that still fail stay, listed with their reasons."""
        result = await _admin(request, viewer).redrive_all()
        return {"redriven": result.redriven, "failed": result.failed}
