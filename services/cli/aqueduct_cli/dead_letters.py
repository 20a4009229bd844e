"""``aqueduct dead-letters``: what accounting could not store, and re-driving it once fixed (Admins)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from aqueduct_cli.client import ApiClient
from aqueduct_cli.common import AsJson, Format
from aqueduct_cli.output import print_objects

__all__ = ["dead_letters"]

dead_letters = typer.Typer(
    help="Usage or directory events accounting could not store, and re-driving them", no_args_is_help=True
)

_COLUMNS = ["id", "failed_at", "source_stream", "source_sequence", "index", "tries", "reason"]


def _short(letter: dict[str, Any]) -> dict[str, Any]:
    reason = str(letter.get("reason", "")).splitlines()[0] if letter.get("reason") else ""
    return {**letter, "reason": reason[:120]}


@dead_letters.command("list")
def list_dead_letters(
    after: Annotated[int, typer.Option(help="Only letters with a larger id")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    output: Format = "table",
    as_json: AsJson = False,
) -> None:
    """List dead letters, oldest first, each with the reason it could not be stored."""
    output = "json" if as_json else output
    answer = ApiClient().request(
        "GET", "accounting", "/api/dead-letters", params={"after": after, "limit": limit}
    )
    letters = answer["dead_letters"]
    print_objects(letters if output == "json" else [_short(x) for x in letters], _COLUMNS, output)
    if output == "table":
        typer.echo(f"{answer['total']} dead letter(s) in all")


@dead_letters.command("show")
def show_dead_letter(letter_id: Annotated[int, typer.Argument(help="The id `list` shows")]) -> None:
    """One dead letter in full: the reason, where it came from, and the message or event as published."""
    typer.echo(
        json.dumps(ApiClient().request("GET", "accounting", f"/api/dead-letters/{letter_id}"), indent=2)
    )


@dead_letters.command("redrive")
def redrive_dead_letters(
    letter_id: Annotated[int | None, typer.Argument(help="The id `list` shows")] = None,
    every: Annotated[bool, typer.Option("--all", help="Re-drive every dead letter")] = False,
) -> None:
    """Store a dead letter again, once its cause is fixed (counted once however often it is re-driven)."""
    client = ApiClient()
    if every == (letter_id is not None):
        raise typer.BadParameter("give one dead letter id, or --all")
    if letter_id is not None:
        client.request("POST", "accounting", f"/api/dead-letters/{letter_id}/redrive")
        typer.echo(f"dead letter {letter_id} re-driven and stored")
        return
    answer = client.request("POST", "accounting", "/api/dead-letters/redrive")
    typer.echo(f"{len(answer['redriven'])} dead letter(s) re-driven and stored")
    for failed in answer["failed"]:
        typer.echo(f"  {failed['id']}: still failing: {str(failed['reason']).splitlines()[0][:200]}")
    if answer["failed"]:
        raise typer.Exit(1)
