"""``aqueduct audit``: the directory's event log and the state of an object at a past moment."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aqueduct_cli.client import ApiClient
from aqueduct_cli.output import print_objects

__all__ = ["audit"]

audit = typer.Typer(
    help="Who changed what, and the state of anything at any past moment", no_args_is_help=True
)


@audit.command("log")
def audit_log(
    aggregate_id: Annotated[str | None, typer.Option("--id", help="Only events of this object")] = None,
    actor: Annotated[str | None, typer.Option(help="Only events caused by this user id")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    limit: Annotated[int, typer.Option()] = 200,
    output: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
) -> None:
    """List events, oldest first."""
    params = {"aggregate_id": aggregate_id, "actor": actor, "since": since, "until": until, "limit": limit}
    answer = ApiClient().request(
        "GET", "directory", "/api/audit/events", params={k: v for k, v in params.items() if v is not None}
    )
    columns = ["notification_id", "occurred_at", "actor", "type", "aggregate_type", "aggregate_id"]
    print_objects(answer, columns, output)


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
