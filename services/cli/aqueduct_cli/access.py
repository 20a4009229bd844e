"""API tokens and service accounts. A token's value is printed once, by the command that makes it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aqueduct_cli.client import CliError
from aqueduct_cli.common import AsJson, Format, call, compact, emit, emit_one, find_team, find_user, listing
from aqueduct_cli.policy import Itpm, Otpm, Rpm, limits_body

__all__ = ["service_accounts", "tokens"]

tokens = typer.Typer(
    help="API tokens (yours, your teams' service accounts; Admins: anyone's)", no_args_is_help=True
)
service_accounts = typer.Typer(help="Service accounts of a team, each with one token", no_args_is_help=True)

Expiry = Annotated[str | None, typer.Option("--expires-at", help="ISO 8601 time, e.g. 2027-06-30T00:00:00Z")]
NoExpiry = Annotated[bool, typer.Option("--no-expiry", help="The token never expires")]
TokenId = Annotated[str, typer.Argument(help="The token's id (see `aqueduct tokens list`)")]


def _print_value(answer: dict[str, Any], quiet: bool, what: str) -> None:
    if quiet:
        typer.echo(answer["value"])
        return
    token = answer["token"]
    expiry = token.get("expires_at") or "never"
    typer.echo(f"{what} {token['name']} ({token['id']}), preview {token['preview']}, expires {expiry}.")
    typer.echo("Its value is shown only now; store it in a password manager:")
    typer.echo(answer["value"])


def _expiry(expires_at: str | None, no_expiry: bool) -> dict[str, Any]:
    if expires_at and no_expiry:
        raise CliError("give --expires-at or --no-expiry, not both")
    if no_expiry:
        return {"expires_at": None}
    return {"expires_at": expires_at} if expires_at else {}


@tokens.command("list")
def tokens_list(
    user: Annotated[
        str | None, typer.Option("--user", help="Another user's tokens (Org-Admins; email or id)")
    ] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-s", help="Only tokens containing this text")
    ] = None,
    output: Format = "table",
    as_json: AsJson = False,
) -> None:
    """Your tokens and your teams' service-account tokens (never their values)."""
    user_id = find_user(user)["id"] if user else None
    rows = listing("/api/tokens", {"user_id": user_id, "q": search})
    emit(rows, ["id", "name", "preview", "service_account_id", "expires_at", "management"], output, as_json)


@tokens.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="A name that says where the token is used")],
    expires_at: Expiry = None,
    team: Annotated[str | None, typer.Option(help="Count usage to this team of yours (name or id)")] = None,
    management: Annotated[
        bool,
        typer.Option(
            "--management",
            help="Also let the token use the management API with your roles (AQUEDUCT_TOKEN for automation); "
            "needs a signed-in session, not an API token",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token value")] = False,
) -> None:
    """Create a token for yourself. Its value is printed once: store it now."""
    team_id = find_team(team)["id"] if team else None
    body = compact({"name": name, "expires_at": expires_at, "team_id": team_id, "management": management})
    _print_value(call("POST", "/api/tokens", json=body), quiet, "Token")


@tokens.command("regenerate")
def tokens_regenerate(
    token_id: TokenId,
    expires_at: Expiry = None,
    no_expiry: NoExpiry = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token value")] = True,
) -> None:
    """Give a token a new value (the old one stops working), optionally with a new expiry (needed when
    it has expired)."""
    body = _expiry(expires_at, no_expiry)
    answer = call("POST", f"/api/tokens/{token_id}/regenerate", json=body)
    _print_value(answer, quiet, "Regenerated")


@tokens.command("update")
def tokens_update(
    token_id: TokenId,
    expires_at: Expiry = None,
    no_expiry: NoExpiry = False,
    rpm: Rpm = None,
    itpm: Itpm = None,
    otpm: Otpm = None,
    as_json: AsJson = False,
) -> None:
    """Change a token's expiry, or (Admins) its own limits, which override every other level."""
    body: dict[str, Any] = _expiry(expires_at, no_expiry)
    if limits := limits_body(rpm, itpm, otpm):
        body["limits"] = limits
    if not body:
        raise CliError("nothing to change: give --expires-at, --no-expiry, --rpm, --itpm or --otpm")
    answer = call("PATCH", f"/api/tokens/{token_id}", json=body)
    emit_one(
        answer,
        f"Token {answer['name']}: expires {answer.get('expires_at') or 'never'}, limits {answer.get('limits') or 'inherited'}",
        as_json,
    )


@tokens.command("delete")
def tokens_delete(token_id: TokenId) -> None:
    """Delete a token; it is refused at once."""
    call("DELETE", f"/api/tokens/{token_id}")
    typer.echo("Deleted.")


# -- service accounts ----------------------------------------------------------------------------------

Team = Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")]
SaId = Annotated[str, typer.Argument(help="The service account's id (see `aqueduct service-accounts list`)")]


@service_accounts.command("list")
def sa_list(team: Team, output: Format = "table", as_json: AsJson = False) -> None:
    """Service accounts of a team, with their owners."""
    rows = listing(f"/api/teams/{find_team(team)['id']}/service-accounts")
    emit(rows, ["id", "name", "description", "owner_email", "token_id"], output, as_json)


@service_accounts.command("create")
def sa_create(
    team: Team,
    name: Annotated[str, typer.Option(help="Name, e.g. the application that uses it")],
    description: Annotated[str, typer.Option(help="What it is used for (required by the user guide)")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token value")] = False,
) -> None:
    """Create a service account (Team-Admins); its token's value is printed once."""
    found = find_team(team)
    answer = call(
        "POST", f"/api/teams/{found['id']}/service-accounts", json={"name": name, "description": description}
    )
    _print_value(answer, quiet, "Service account token")


@service_accounts.command("update")
def sa_update(
    sa_id: SaId,
    name: Annotated[str | None, typer.Option(help="New name")] = None,
    description: Annotated[str | None, typer.Option(help="New description")] = None,
    owner: Annotated[str | None, typer.Option(help="Transfer to this team member (email or id)")] = None,
) -> None:
    """Rename, describe or transfer a service account."""
    owner_id = find_user(owner)["id"] if owner else None
    body = compact({"name": name, "description": description, "owner_user_id": owner_id})
    if not body:
        raise CliError("nothing to change: give --name, --description or --owner")
    emit_one(call("PATCH", f"/api/service-accounts/{sa_id}", json=body))


@service_accounts.command("delete")
def sa_delete(sa_id: SaId) -> None:
    """Delete a service account; its token is refused at once."""
    call("DELETE", f"/api/service-accounts/{sa_id}")
    typer.echo("Deleted.")
