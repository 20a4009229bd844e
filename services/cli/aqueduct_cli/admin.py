"""Administration commands: thin translations into the directory's HTTP API (docs/contracts.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from aqueduct_cli.client import ApiClient
from aqueduct_cli.output import print_objects

__all__ = ["endpoints", "models", "orgs", "teams", "tokens", "users"]

orgs = typer.Typer(help="Organisations (Admins)", no_args_is_help=True)
teams = typer.Typer(help="Teams of an organisation", no_args_is_help=True)
users = typer.Typer(help="Users of an organisation", no_args_is_help=True)
tokens = typer.Typer(help="API tokens", no_args_is_help=True)
endpoints = typer.Typer(help="Upstream endpoints", no_args_is_help=True)
models = typer.Typer(help="Models served through endpoints", no_args_is_help=True)

Output = Annotated[str, typer.Option("--format", help="table, json or csv")]


def _limits(rpm: int | None, itpm: int | None, otpm: int | None) -> dict[str, int] | None:
    limits = {
        "requests_per_minute": rpm,
        "input_tokens_per_minute": itpm,
        "output_tokens_per_minute": otpm,
    }
    chosen = {k: v for k, v in limits.items() if v is not None}
    return chosen or None


RPM = Annotated[int | None, typer.Option("--rpm", help="Requests per minute")]
ITPM = Annotated[int | None, typer.Option("--itpm", help="Input tokens per minute")]
OTPM = Annotated[int | None, typer.Option("--otpm", help="Output tokens per minute")]


def _post(path: str, body: dict[str, Any]) -> Any:
    return ApiClient().request(
        "POST", "directory", path, json={k: v for k, v in body.items() if v is not None}
    )


def _show(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@orgs.command("list")
def orgs_list(output: Output = "table") -> None:
    print_objects(ApiClient().request("GET", "directory", "/api/orgs"), ["id", "name", "sso_group"], output)


@orgs.command("create")
def orgs_create(
    name: str,
    sso_group: Annotated[str | None, typer.Option(help="SSO group that maps users to this org")] = None,
    rpm: RPM = None,
    itpm: ITPM = None,
    otpm: OTPM = None,
) -> None:
    _show(_post("/api/orgs", {"name": name, "sso_group": sso_group, "limits": _limits(rpm, itpm, otpm)}))


@teams.command("list")
def teams_list(org_id: Annotated[str | None, typer.Option()] = None, output: Output = "table") -> None:
    params = {"org_id": org_id} if org_id else {}
    answer = ApiClient().request("GET", "directory", "/api/teams", params=params)
    print_objects(answer, ["id", "name", "org_id", "description"], output)


@teams.command("create")
def teams_create(
    name: str,
    org_id: Annotated[str, typer.Option()],
    description: Annotated[str, typer.Option()] = "",
    rpm: RPM = None,
    itpm: ITPM = None,
    otpm: OTPM = None,
) -> None:
    body = {"org_id": org_id, "name": name, "description": description, "limits": _limits(rpm, itpm, otpm)}
    _show(_post("/api/teams", body))


@teams.command("add-member")
def teams_add_member(
    team_id: str,
    user_id: str,
    team_admin: Annotated[bool, typer.Option("--team-admin")] = False,
) -> None:
    _show(_post(f"/api/teams/{team_id}/members", {"user_id": user_id, "team_admin": team_admin}))


@users.command("list")
def users_list(org_id: Annotated[str | None, typer.Option()] = None, output: Output = "table") -> None:
    params = {"org_id": org_id} if org_id else {}
    answer = ApiClient().request("GET", "directory", "/api/users", params=params)
    print_objects(answer, ["id", "email", "name", "org_id", "roles"], output)


@users.command("create")
def users_create(
    email: str,
    org_id: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()] = "",
    org_admin: Annotated[bool, typer.Option("--org-admin")] = False,
    admin: Annotated[bool, typer.Option("--admin")] = False,
) -> None:
    body = {"email": email, "name": name or email, "org_id": org_id, "org_admin": org_admin, "admin": admin}
    _show(_post("/api/users", body))


@tokens.command("list")
def tokens_list(output: Output = "table") -> None:
    answer = ApiClient().request("GET", "directory", "/api/tokens")
    print_objects(answer, ["id", "name", "preview", "service_account_id", "expires_at", "management"], output)


@tokens.command("create")
def tokens_create(
    name: Annotated[str, typer.Option()],
    expires_at: Annotated[
        str | None, typer.Option(help="ISO 8601 time; omit for a token that never expires")
    ] = None,
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
    answer = _post("/api/tokens", {"name": name, "expires_at": expires_at, "management": management})
    if quiet:
        typer.echo(answer["value"])
        return
    token = answer["token"]
    typer.echo(f"Token {token['name']} ({token['id']}), preview {token['preview']}.")
    typer.echo("Its value is shown only now; store it in a password manager:")
    typer.echo(answer["value"])


@tokens.command("regenerate")
def tokens_regenerate(token_id: str) -> None:
    """Give a token a new value; the old value stops working."""
    answer = ApiClient().request("POST", "directory", f"/api/tokens/{token_id}/regenerate")
    typer.echo(answer["value"])


@tokens.command("delete")
def tokens_delete(token_id: str) -> None:
    ApiClient().request("DELETE", "directory", f"/api/tokens/{token_id}")
    typer.echo("Deleted.")


@endpoints.command("list")
def endpoints_list(output: Output = "table") -> None:
    answer = ApiClient().request("GET", "directory", "/api/endpoints")
    print_objects(answer, ["slug", "url", "provider", "api_key_env", "responses"], output)


@models.command("list")
def models_list(output: Output = "table") -> None:
    answer = ApiClient().request("GET", "directory", "/api/models")
    for model in answer:
        model["aliases"] = ", ".join(model.get("aliases") or []) if output != "json" else model.get("aliases")
    print_objects(answer, ["name", "endpoint", "upstream_model", "aliases"], output)


@models.command("aliases")
def models_aliases(
    name: Annotated[str, typer.Argument(help="the model")],
    aliases: Annotated[list[str] | None, typer.Argument(help="its aliases (none: remove them all)")] = None,
) -> None:
    """Set the other names clients may use for a model (e.g. the fixed names coding agents send)."""
    answer = ApiClient().request("PATCH", "directory", f"/api/models/{name}", json={"aliases": aliases or []})
    typer.echo(", ".join(answer.get("aliases") or []) or "No aliases.")
