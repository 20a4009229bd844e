"""What every admin command shares: the output options, one API call, and finding things by name.

Commands take names where people think in names (an org by name, a team as ``org/team`` or by name, a
user by email) and ids everywhere; the directory's ids always work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from aqueduct_cli.client import ApiClient, CliError
from aqueduct_cli.output import print_objects

__all__ = [
    "AsJson",
    "Format",
    "api",
    "call",
    "compact",
    "emit",
    "emit_one",
    "find_org",
    "find_team",
    "find_user",
    "listing",
]

FORMATS = ("table", "json", "csv")


def _known_format(value: str) -> str:
    """A typo (``--format xml``) is refused with the valid values, not answered with a table."""
    if value not in FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(FORMATS)}")
    return value


Format = Annotated[str, typer.Option("--format", help="Output: table, json or csv", callback=_known_format)]
AsJson = Annotated[bool, typer.Option("--json", help="Output JSON (for scripts); same as --format json")]


def api() -> ApiClient:
    return ApiClient()


def call(method: str, path: str, service: str = "directory", **kwargs: Any) -> Any:
    return api().request(method, service, path, **kwargs)


def compact(body: dict[str, Any]) -> dict[str, Any]:
    """The fields that were given (None: not given)."""
    return {k: v for k, v in body.items() if v is not None}


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], output: str, as_json: bool) -> None:
    print_objects(rows, columns, "json" if as_json else output)


def emit_one(obj: Any, message: str | None = None, as_json: bool = False) -> None:
    """A changed or created object: JSON (the default for one object), or a sentence with ``--quiet``."""
    if message is not None and not as_json:
        typer.echo(message)
        return
    typer.echo(json.dumps(obj, indent=2, default=str))


def listing(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    answer = call("GET", path, params=compact(params or {}))
    return list(answer or [])


def _is_id(value: str) -> bool:
    return len(value) == 36 and value.count("-") == 4


def find_org(ref: str) -> dict[str, Any]:
    """An org by id or name."""
    if _is_id(ref):
        return dict(call("GET", f"/api/orgs/{ref}"))
    found = [o for o in listing("/api/orgs") if o["name"] == ref]
    if not found:
        raise CliError(f"no org named {ref!r} (see `aqueduct orgs list`)")
    return found[0]


def find_team(ref: str, org: str | None = None) -> dict[str, Any]:
    """A team by id, ``org/team``, or name (with ``--org`` when two orgs have a team of that name). Names
    may hold a "/" themselves: ``a/b/c`` is team ``b/c`` of org ``a``, team ``c`` of org ``a/b``, or the
    team named ``a/b/c``, whichever exists (several: an error that says how to choose)."""
    if _is_id(ref):
        return dict(call("GET", f"/api/teams/{ref}"))
    if org is not None:
        org_id = find_org(org)["id"]
        found = [t for t in listing("/api/teams", {"org_id": org_id}) if t["name"] == ref]
    elif "/" in ref:
        orgs = {o["name"]: o["id"] for o in listing("/api/orgs")}
        teams = listing("/api/teams", {})
        splits = {(ref[:i], ref[i + 1 :]) for i, c in enumerate(ref) if c == "/"}
        found = [
            t
            for t in teams
            if t["name"] == ref
            or any(orgs.get(org_name) == t.get("org_id") and t["name"] == name for org_name, name in splits)
        ]
    else:
        found = [t for t in listing("/api/teams", {}) if t["name"] == ref]
    if not found:
        raise CliError(f"no team named {ref!r} (see `aqueduct teams list`)")
    if len(found) > 1:
        raise CliError(
            f"several teams match {ref!r}: write ORG/TEAM, pass --org, or give the team's id "
            "(see `aqueduct teams list`)"
        )
    return found[0]


def find_user(ref: str, include_deactivated: bool = False) -> dict[str, Any]:
    """A user by id or email."""
    if _is_id(ref):
        if include_deactivated:
            found = [u for u in _users(ref, True) if u["id"] == ref]
            if found:
                return found[0]
        return dict(call("GET", f"/api/users/{ref}"))
    found = [u for u in _users(ref, include_deactivated) if u["email"].lower() == ref.lower()]
    if not found:
        raise CliError(f"no user with email {ref!r} (see `aqueduct users list`)")
    return found[0]


def _users(search: str, include_deactivated: bool) -> list[dict[str, Any]]:
    params = {"q": search, "include_deactivated": "true" if include_deactivated else None}
    return listing("/api/users", params)
