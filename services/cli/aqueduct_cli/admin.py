"""Organisations, teams and users: thin translations into the directory's (and auth's) HTTP APIs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aqueduct_cli.client import CliError
from aqueduct_cli.common import (
    AsJson,
    Format,
    api,
    call,
    compact,
    emit,
    emit_one,
    find_org,
    find_team,
    find_user,
    listing,
)
from aqueduct_cli.policy import Itpm, Otpm, Rpm, add_policy_commands, limits_body
from aqueduct_libs.tokens import TOKEN_PREFIX

__all__ = ["orgs", "teams", "users"]

orgs = typer.Typer(
    help="Organisations (Admins create them; Org-Admins manage their own)", no_args_is_help=True
)
teams = typer.Typer(help="Teams of an organisation, their members and Team-Admins", no_args_is_help=True)
users = typer.Typer(
    help="Users: accounts, roles (Org-Admin, Admin), deactivation, limits and budgets", no_args_is_help=True
)

Search = Annotated[str | None, typer.Option("--search", "-s", help="Only rows containing this text")]
Limit = Annotated[int | None, typer.Option("--limit", help="At most this many rows", min=1, max=1000)]
Offset = Annotated[int, typer.Option("--offset", help="Skip this many rows (paging)", min=0)]
OrgRef = Annotated[str | None, typer.Option("--org", "--org-id", help="The org (name or id)")]


def _page(search: str | None, limit: int | None, offset: int, sort: str) -> dict[str, Any]:
    return {"q": search, "limit": limit, "offset": offset or None, "sort": sort}


# -- orgs ----------------------------------------------------------------------------------------------


@orgs.command("list")
def orgs_list(search: Search = None, output: Format = "table", as_json: AsJson = False) -> None:
    """The orgs you can see (Admins: all)."""
    emit(listing("/api/orgs", _page(search, None, 0, "name")), ["id", "name", "sso_group"], output, as_json)


@orgs.command("show")
def orgs_show(org: Annotated[str, typer.Argument(help="The org (name or id)")]) -> None:
    """An org with its limits, budgets and exclusions."""
    emit_one(find_org(org))


@orgs.command("create")
def orgs_create(
    name: Annotated[str, typer.Argument(help="Name of the new org")],
    sso_group: Annotated[str | None, typer.Option(help="SSO group that maps users to this org")] = None,
    rpm: Rpm = None,
    itpm: Itpm = None,
    otpm: Otpm = None,
) -> None:
    """Create an org (Admins)."""
    body = {"name": name, "sso_group": sso_group, "limits": limits_body(rpm, itpm, otpm) or None}
    emit_one(call("POST", "/api/orgs", json=compact(body)))


@orgs.command("update")
def orgs_update(
    org: Annotated[str, typer.Argument(help="The org (name or id)")],
    name: Annotated[str | None, typer.Option(help="New name")] = None,
    sso_group: Annotated[str | None, typer.Option(help="SSO group that maps users to this org")] = None,
    default_team: Annotated[str | None, typer.Option(help="Team new users join (name or id)")] = None,
) -> None:
    """Rename an org, change its SSO group or its default team."""
    found = find_org(org)
    team_id = find_team(default_team, found["id"])["id"] if default_team else None
    body = compact({"name": name, "sso_group": sso_group, "default_team_id": team_id})
    if not body:
        raise CliError("nothing to change: give --name, --sso-group or --default-team")
    emit_one(call("PATCH", f"/api/orgs/{found['id']}", json=body))


add_policy_commands(orgs, "org", find_org, "/api/orgs/{id}")


# -- teams ---------------------------------------------------------------------------------------------


def _team(ref: str) -> dict[str, Any]:
    return find_team(ref)


@teams.command("list")
def teams_list(
    org: OrgRef = None,
    search: Search = None,
    limit: Limit = None,
    offset: Offset = 0,
    output: Format = "table",
    as_json: AsJson = False,
) -> None:
    """Teams of an org (default: yours; Admins: all)."""
    org_id = find_org(org)["id"] if org else None
    rows = listing("/api/teams", {"org_id": org_id, **_page(search, limit, offset, "name")})
    for row in rows:
        row["members"] = len(row.get("members") or [])
    emit(rows, ["id", "name", "org_id", "description", "members"], output, as_json)


@teams.command("show")
def teams_show(team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")]) -> None:
    """A team with its members (names and emails), limits and budgets."""
    emit_one(_team(team))


@teams.command("create")
def teams_create(
    name: Annotated[str, typer.Argument(help="Name of the new team")],
    org: Annotated[str, typer.Option("--org", "--org-id", help="The org (name or id)")],
    description: Annotated[str, typer.Option(help="What the team is for")] = "",
    rpm: Rpm = None,
    itpm: Itpm = None,
    otpm: Otpm = None,
) -> None:
    """Create a team (Org-Admins)."""
    body = {
        "org_id": find_org(org)["id"],
        "name": name,
        "description": description,
        "limits": limits_body(rpm, itpm, otpm) or None,
    }
    emit_one(call("POST", "/api/teams", json=compact(body)))


@teams.command("update")
def teams_update(
    team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")],
    name: Annotated[str | None, typer.Option(help="New name")] = None,
    description: Annotated[str | None, typer.Option(help="New description")] = None,
) -> None:
    """Rename a team or change its description."""
    body = compact({"name": name, "description": description})
    if not body:
        raise CliError("nothing to change: give --name or --description")
    emit_one(call("PATCH", f"/api/teams/{_team(team)['id']}", json=body))


@teams.command("delete")
def teams_delete(
    team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete a team; its service accounts' tokens stop working (Org-Admins)."""
    found = _team(team)
    if not yes:
        typer.confirm(f"Delete team {found['name']} and its service accounts?", abort=True)
    call("DELETE", f"/api/teams/{found['id']}")
    typer.echo(f"Deleted team {found['name']}.")


@teams.command("members")
def teams_members(
    team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")],
    output: Format = "table",
    as_json: AsJson = False,
) -> None:
    """Members of a team with names, emails and who is Team-Admin."""
    emit(_team(team)["members"], ["user_id", "name", "email", "team_admin", "joined_at"], output, as_json)


@teams.command("add-member")
def teams_add_member(
    team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")],
    user: Annotated[str, typer.Argument(help="The user (email or id)")],
    team_admin: Annotated[bool, typer.Option("--team-admin", help="Also make them Team-Admin")] = False,
) -> None:
    """Add a user of the team's org to the team."""
    body = {"user_id": find_user(user)["id"], "team_admin": team_admin}
    emit_one(call("POST", f"/api/teams/{_team(team)['id']}/members", json=body))


def _member_action(team: str, user: str, action: str) -> Any:
    return call("POST", f"/api/teams/{_team(team)['id']}/members/{find_user(user)['id']}/{action}")


@teams.command("remove-member")
def teams_remove_member(
    team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")],
    user: Annotated[str, typer.Argument(help="The user (email or id)")],
) -> None:
    """Remove a user from the team (they keep their account)."""
    found, person = _team(team), find_user(user)
    call("DELETE", f"/api/teams/{found['id']}/members/{person['id']}")
    typer.echo(f"Removed {person['email']} from {found['name']}.")


@teams.command("promote")
def teams_promote(
    team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")],
    user: Annotated[str, typer.Argument(help="The member (email or id)")],
) -> None:
    """Make a member Team-Admin."""
    _member_action(team, user, "promote")
    typer.echo(f"{user} is now Team-Admin of {team}.")


@teams.command("demote")
def teams_demote(
    team: Annotated[str, typer.Argument(help="The team (id, ORG/TEAM or name)")],
    user: Annotated[str, typer.Argument(help="The Team-Admin (email or id)")],
) -> None:
    """Make a Team-Admin a plain member again."""
    _member_action(team, user, "demote")
    typer.echo(f"{user} is no longer Team-Admin of {team}.")


add_policy_commands(teams, "team", _team, "/api/teams/{id}")


# -- users ---------------------------------------------------------------------------------------------

ROLES = {"org-admin": "org_admin", "admin": "admin"}
Role = Annotated[str, typer.Argument(help="org-admin or admin (Team-Admin: `aqueduct teams promote`)")]


@users.command("list")
def users_list(
    org: OrgRef = None,
    search: Search = None,
    include_deactivated: Annotated[bool, typer.Option("--all", help="Deactivated users too")] = False,
    limit: Limit = None,
    offset: Offset = 0,
    output: Format = "table",
    as_json: AsJson = False,
) -> None:
    """Users of an org (default: yours; Admins: all), by email."""
    org_id = find_org(org)["id"] if org else None
    params = {
        "org_id": org_id,
        "include_deactivated": "true" if include_deactivated else None,
        **_page(search, limit, offset, "email"),
    }
    rows = listing("/api/users", params)
    for row in rows:
        row["roles"] = ", ".join(row.get("roles") or [])
        row["active"] = not row.get("deleted")
    emit(rows, ["id", "email", "name", "roles", "active"], output, as_json)


@users.command("show")
def users_show(user: Annotated[str, typer.Argument(help="The user (email or id)")]) -> None:
    """A user with roles, teams, limits, budgets and exclusions."""
    emit_one(find_user(user, include_deactivated=True))


@users.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The user's email")],
    org: Annotated[str, typer.Option("--org", "--org-id", help="The org (name or id)")],
    name: Annotated[str, typer.Option(help="Full name")] = "",
    username: Annotated[
        str | None,
        typer.Option(help="Also create a local account with this username (sign-in without SSO)"),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the local account's password from stdin (default: a one-time password)",
        ),
    ] = False,
    org_admin: Annotated[bool, typer.Option("--org-admin", help="Make them Org-Admin")] = False,
    admin: Annotated[bool, typer.Option("--admin", help="Make them Admin (Admins only)")] = False,
) -> None:
    """Add a user to an org. With --username they also get a local account: a one-time password is
    printed (once) unless --password-stdin; they choose their own at first sign-in. Without it they sign
    in with single sign-on, matched by email."""
    if username is not None and api().bearer().startswith(TOKEN_PREFIX):
        # Checked first: the directory user would be created and the local account then refused.
        raise CliError(
            "--username needs a signed-in session (`aqueduct login`): the auth service does not accept "
            "API tokens, so the local account could not be created"
        )
    found = find_org(org)
    body = {
        "email": email,
        "name": name or email,
        "org_id": found["id"],
        "org_admin": org_admin,
        "admin": admin,
    }
    created = call("POST", "/api/users", json=body)
    if username is None:
        emit_one(created)
        return
    password = typer.get_text_stream("stdin").readline().rstrip("\n") if password_stdin else None
    account = {
        "username": username,
        "password": password,
        "email": email,
        "name": name or email,
        "groups": [found["sso_group"]] if found.get("sso_group") else [],
        "admin": admin,
        "must_change_password": True,
    }
    answer = call("POST", "/auth/local-users", service="auth", json=compact(account))
    typer.echo(f"Created user {email} ({created['id']}) with local account {answer['username']}.")
    if answer.get("one_time_password"):
        typer.echo("One-time password (shown only now; they choose their own at first sign-in):")
        typer.echo(answer["one_time_password"])
    else:
        typer.echo("They choose their own password at first sign-in.")


@users.command("update")
def users_update(
    user: Annotated[str, typer.Argument(help="The user (email or id)")],
    name: Annotated[str | None, typer.Option(help="New full name")] = None,
    email: Annotated[str | None, typer.Option(help="New email")] = None,
) -> None:
    """Change a user's name or email."""
    body = compact({"name": name, "email": email})
    if not body:
        raise CliError("nothing to change: give --name or --email")
    emit_one(call("PATCH", f"/api/users/{find_user(user)['id']}", json=body))


def _set_role(user: str, role: str, value: bool) -> None:
    if role not in ROLES:
        raise CliError(f"role must be one of: {', '.join(ROLES)} (Team-Admin: `aqueduct teams promote`)")
    answer = call("PATCH", f"/api/users/{find_user(user)['id']}", json={ROLES[role]: value})
    typer.echo(f"{answer['email']}: {', '.join(answer.get('roles') or [])}")


@users.command("grant")
def users_grant(user: Annotated[str, typer.Argument(help="The user (email or id)")], role: Role) -> None:
    """Grant Org-Admin (Org-Admins) or Admin (Admins)."""
    _set_role(user, role, True)


@users.command("revoke")
def users_revoke(user: Annotated[str, typer.Argument(help="The user (email or id)")], role: Role) -> None:
    """Revoke Org-Admin or Admin."""
    _set_role(user, role, False)


@users.command("deactivate")
def users_deactivate(user: Annotated[str, typer.Argument(help="The user (email or id)")]) -> None:
    """The user can no longer sign in and all their tokens are refused at once; history stays."""
    found = find_user(user)
    call("DELETE", f"/api/users/{found['id']}")
    typer.echo(f"Deactivated {found['email']}: their tokens are refused from now on.")


@users.command("reactivate")
def users_reactivate(user: Annotated[str, typer.Argument(help="The user (email or id)")]) -> None:
    """A deactivated user signs in again; their unexpired tokens work again."""
    found = find_user(user, include_deactivated=True)
    call("POST", f"/api/users/{found['id']}/reactivate")
    typer.echo(f"Reactivated {found['email']}.")


@users.command("reset-password")
def users_reset_password(
    username: Annotated[str, typer.Argument(help="The local account's username")],
) -> None:
    """A new one-time password for a local account (Admins); the old password stops working."""
    answer = call("POST", f"/auth/local-users/{username}/reset-password", service="auth")
    typer.echo("One-time password (shown only now; they choose their own at next sign-in):")
    typer.echo(answer["one_time_password"])


@users.command("accounts")
def users_accounts(output: Format = "table", as_json: AsJson = False) -> None:
    """Local accounts (username sign-in) and whether each must still choose its password (Admins)."""
    rows = list(call("GET", "/auth/local-users", service="auth") or [])
    emit(rows, ["username", "email", "name", "admin", "must_change_password"], output, as_json)


add_policy_commands(users, "user", find_user, "/api/users/{id}")
