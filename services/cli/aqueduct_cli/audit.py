"""``aqueduct audit``: the directory's event log and the state of an object at a past moment."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aqueduct_cli.client import ApiClient
from aqueduct_cli.common import Format
from aqueduct_cli.output import print_objects

__all__ = ["audit"]

audit = typer.Typer(
    help="Who changed what, and the state of anything at any past moment", no_args_is_help=True
)


@audit.command("log")
def audit_log(
    aggregate_id: Annotated[str | None, typer.Option("--id", help="Only events of this object")] = None,
    actor: Annotated[str | None, typer.Option(help="Only events caused by this user id")] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only this event type, e.g. TokenIssued")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Only events of this kind of object: Org, Team, User, Token, ..."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    limit: Annotated[int, typer.Option(help="Events per page", min=1, max=100_000)] = 50,
    page: Annotated[int, typer.Option(help="Page number, 1 = the newest events", min=1)] = 1,
    oldest_first: Annotated[bool, typer.Option("--oldest-first", help="Oldest events first")] = False,
    before: Annotated[
        int | None,
        typer.Option(
            help="Only events older than this notification id: the next page after the last event shown, "
            "steady while new events arrive",
            min=1,
        ),
    ] = None,
    output: Format = "table",
    as_json: Annotated[bool, typer.Option("--json", help="Output JSON (for scripts)")] = False,
) -> None:
    """The event log, newest first, one page at a time; says how many events match in all."""
    params = {
        "aggregate_id": aggregate_id,
        "actor": actor,
        "type": event_type,
        "aggregate_type": kind,
        "since": since,
        "until": until,
        "limit": limit,
        "offset": (page - 1) * limit,
        "order": "asc" if oldest_first else "desc",
        "before_id": before,
    }
    client = ApiClient()
    answer, total = client.request_page(
        "GET", "directory", "/api/audit/events", params={k: v for k, v in params.items() if v is not None}
    )
    columns = ["notification_id", "occurred_at", "actor", "type", "aggregate_type", "aggregate_id"]
    fmt = "json" if as_json else output
    print_objects(answer, columns, fmt)
    if fmt == "table":
        shown_to = (page - 1) * limit + len(answer)
        more = f"; next: --page {page + 1}" if shown_to < total else ""
        typer.echo(f"events {(page - 1) * limit + 1 if answer else 0}-{shown_to} of {total}{more}", err=True)


@audit.command("at")
def audit_at(
    time: Annotated[str, typer.Argument(help="ISO 8601 time")],
    aggregate_id: Annotated[str, typer.Option("--id", help="The token, user, team or org")],
) -> None:
    """The state of one object at that moment."""
    answer = ApiClient().request(
        "GET", "directory", "/api/audit/at", params={"time": time, "aggregate_id": aggregate_id}
    )
    typer.echo(json.dumps(answer, indent=2, default=str))


@audit.command("model-access")
def audit_model_access(
    model: Annotated[str, typer.Option(help="Model name")],
    time: Annotated[str, typer.Option(help="ISO 8601 time")],
) -> None:
    """Which tokens could call this model at that moment, and under which limits."""
    answer = ApiClient().request(
        "GET", "directory", "/api/audit/model-access", params={"model": model, "time": time}
    )
    typer.echo(json.dumps(answer, indent=2, default=str))
