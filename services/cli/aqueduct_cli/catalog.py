"""Endpoints, models, MCP servers and terms of service (Admins change them; everybody reads)."""

from __future__ import annotations

from typing import Annotated

import typer

from aqueduct_cli.client import CliError
from aqueduct_cli.common import AsJson, Format, call, compact, emit, emit_one, find_team, listing

__all__ = ["endpoints", "mcp", "models", "terms"]

endpoints = typer.Typer(
    help="Upstream endpoints (model servers) the gateway forwards to", no_args_is_help=True
)
models = typer.Typer(help="Models served through endpoints, with prices", no_args_is_help=True)
mcp = typer.Typer(help="MCP tool servers and the teams that may use them", no_args_is_help=True)
terms = typer.Typer(help="Terms of service users must accept", no_args_is_help=True)

Slug = Annotated[str, typer.Argument(help="The endpoint's slug (also its path prefix /SLUG/v1)")]
Url = Annotated[str | None, typer.Option(help="Base URL including /v1, e.g. http://vllm:8000/v1")]
Provider = Annotated[str | None, typer.Option(help="openai, anthropic, azure or litellm")]
KeyEnv = Annotated[
    str | None, typer.Option("--api-key-env", help="Name of the environment variable holding the key")
]
Yes = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")]
Responses = Annotated[
    bool | None,
    typer.Option(
        "--responses/--no-responses",
        help="Whether the server has OpenAI's Responses API (--no-responses: the gateway translates "
        "/v1/responses to chat completions, for Ollama, llama.cpp and other chat-only servers)",
    ),
]


def _confirm(yes: bool, question: str) -> None:
    if not yes:
        typer.confirm(question, abort=True)


@endpoints.command("list")
def endpoints_list(output: Format = "table", as_json: AsJson = False) -> None:
    """Every endpoint."""
    emit(listing("/api/endpoints"), ["slug", "url", "provider", "api_key_env", "responses"], output, as_json)


@endpoints.command("create")
def endpoints_create(
    slug: Slug,
    url: Annotated[str, typer.Option(help="Base URL including /v1, e.g. http://vllm:8000/v1")],
    provider: Provider = "openai",
    api_key_env: KeyEnv = None,
    responses: Responses = None,
) -> None:
    """Register an endpoint; its key stays in the proxy's environment, only its variable's name is stored."""
    body = {
        "slug": slug,
        "url": url,
        "provider": provider,
        "api_key_env": api_key_env,
        "responses": responses,
    }
    emit_one(call("POST", "/api/endpoints", json=compact(body)))


@endpoints.command("update")
def endpoints_update(
    slug: Slug,
    url: Url = None,
    provider: Provider = None,
    api_key_env: KeyEnv = None,
    responses: Responses = None,
) -> None:
    """Change an endpoint's URL, provider, key variable or Responses API setting."""
    body = compact({"url": url, "provider": provider, "api_key_env": api_key_env, "responses": responses})
    if not body:
        raise CliError("nothing to change: give --url, --provider, --api-key-env or --[no-]responses")
    emit_one(call("PATCH", f"/api/endpoints/{slug}", json=body))


@endpoints.command("delete")
def endpoints_delete(slug: Slug, yes: Yes = False) -> None:
    """Remove an endpoint (its models must be removed first)."""
    _confirm(yes, f"Remove endpoint {slug}?")
    call("DELETE", f"/api/endpoints/{slug}")
    typer.echo(f"Removed endpoint {slug}.")


# -- models --------------------------------------------------------------------------------------------

Name = Annotated[str, typer.Argument(help="The model's name, as clients use it")]
InPrice = Annotated[
    str | None, typer.Option("--input-price", help="Dollars per million input tokens (omit: LiteLLM's map)")
]
OutPrice = Annotated[str | None, typer.Option("--output-price", help="Dollars per million output tokens")]
Fallbacks = Annotated[
    list[str] | None, typer.Option("--fallback", help="A model to try when this one fails (repeatable)")
]
Aliases = Annotated[
    list[str] | None,
    typer.Option("--alias", help="Another name clients may use for it, e.g. claude-sonnet-4-5 (repeatable)"),
]
CachedPrice = Annotated[
    str | None,
    typer.Option("--cached-input-price", help="Dollars per million input tokens read from the cache"),
]
WritePrice = Annotated[
    str | None,
    typer.Option("--cache-write-price", help="Dollars per million tokens written to the cache for 5 minutes"),
]
WriteHourPrice = Annotated[
    str | None,
    typer.Option("--cache-write-1h-price", help="Dollars per million tokens written to the cache for 1 hour"),
]
ReasoningPrice = Annotated[
    str | None, typer.Option("--reasoning-price", help="Dollars per million reasoning tokens")
]


def _class_prices(cached: str | None, write: str | None, hour: str | None, reasoning: str | None) -> dict:
    return {
        "cached_input_price_per_million": cached,
        "cache_write_price_per_million": write,
        "cache_write_1h_price_per_million": hour,
        "reasoning_price_per_million": reasoning,
    }


@models.command("list")
def models_list(
    everything: Annotated[
        bool, typer.Option("--all", help="Every model, and why you may not use some (else: what you may use)")
    ] = False,
    search: Annotated[
        str | None, typer.Option("--search", "-s", help="Only models containing this text")
    ] = None,
    output: Format = "table",
    as_json: AsJson = False,
) -> None:
    """The models you may call (the same list the proxy's /v1/models gives your tokens)."""
    rows = listing("/api/models", {"all": "true" if everything else None, "q": search})
    columns = [
        "name",
        "endpoint",
        "upstream_model",
        "aliases",
        "input_price_per_million",
        "output_price_per_million",
    ]
    if everything:
        columns += ["available", "unavailable_reason"]
    emit(rows, columns, output, as_json)


@models.command("create")
def models_create(
    name: Name,
    endpoint: Annotated[str, typer.Option(help="The endpoint's slug")],
    upstream_model: Annotated[
        str | None, typer.Option(help="The id the upstream knows (default: name)")
    ] = None,
    input_price: InPrice = None,
    output_price: OutPrice = None,
    fallback: Fallbacks = None,
    alias: Aliases = None,
    cached_input_price: CachedPrice = None,
    cache_write_price: WritePrice = None,
    cache_write_1h_price: WriteHourPrice = None,
    reasoning_price: ReasoningPrice = None,
) -> None:
    """Register a model on an endpoint."""
    body = {
        "name": name,
        "endpoint": endpoint,
        "upstream_model": upstream_model,
        "input_price_per_million": input_price,
        "output_price_per_million": output_price,
        "fallbacks": fallback,
        "aliases": alias,
        **_class_prices(cached_input_price, cache_write_price, cache_write_1h_price, reasoning_price),
    }
    emit_one(call("POST", "/api/models", json=compact(body)))


@models.command("update")
def models_update(
    name: Name,
    endpoint: Annotated[str | None, typer.Option(help="Move to this endpoint (slug)")] = None,
    upstream_model: Annotated[str | None, typer.Option(help="The id the upstream knows")] = None,
    input_price: InPrice = None,
    output_price: OutPrice = None,
    clear_prices: Annotated[
        bool, typer.Option("--clear-prices", help="Remove both prices (LiteLLM's price map applies)")
    ] = False,
    fallback: Fallbacks = None,
    alias: Aliases = None,
    cached_input_price: CachedPrice = None,
    cache_write_price: WritePrice = None,
    cache_write_1h_price: WriteHourPrice = None,
    reasoning_price: ReasoningPrice = None,
) -> None:
    """Change a model's endpoint, upstream id, prices, fallbacks or aliases (--alias replaces them)."""
    body = compact(
        {
            "endpoint": endpoint,
            "upstream_model": upstream_model,
            "input_price_per_million": input_price,
            "output_price_per_million": output_price,
            "fallbacks": fallback,
            "aliases": alias,
            **_class_prices(cached_input_price, cache_write_price, cache_write_1h_price, reasoning_price),
        }
    )
    if clear_prices:
        body.update(input_price_per_million=None, output_price_per_million=None)
    if not body:
        raise CliError("nothing to change")
    emit_one(call("PATCH", f"/api/models/{name}", json=body))


@models.command("aliases")
def models_aliases(
    name: Name,
    aliases: Annotated[list[str] | None, typer.Argument(help="Its aliases (none: remove them all)")] = None,
) -> None:
    """Set the other names clients may use for a model (e.g. the fixed names coding agents send)."""
    answer = call("PATCH", f"/api/models/{name}", json={"aliases": aliases or []})
    typer.echo(", ".join(answer.get("aliases") or []) or "No aliases.")


@models.command("delete")
def models_delete(name: Name, yes: Yes = False) -> None:
    """Remove a model; calls naming it are refused with 404 from then on."""
    _confirm(yes, f"Remove model {name}?")
    call("DELETE", f"/api/models/{name}")
    typer.echo(f"Removed model {name}.")


# -- MCP servers ---------------------------------------------------------------------------------------

McpName = Annotated[str, typer.Argument(help="The server's name (its path /mcp/NAME)")]
Teams = Annotated[
    list[str] | None, typer.Option("--team", help="A team that may use it (ORG/TEAM or id; repeatable)")
]


@mcp.command("list")
def mcp_list(output: Format = "table", as_json: AsJson = False) -> None:
    """MCP servers you can reach (Admins: all)."""
    emit(listing("/api/mcp-servers"), ["name", "url", "allowed_team_ids", "api_key_env"], output, as_json)


@mcp.command("create")
def mcp_create(
    name: McpName,
    url: Annotated[str, typer.Option(help="The server's streamable-HTTP URL")],
    team: Teams = None,
    api_key_env: KeyEnv = None,
) -> None:
    """Register an MCP server for some teams."""
    body = {
        "name": name,
        "url": url,
        "allowed_team_ids": [find_team(t)["id"] for t in team or []],
        "api_key_env": api_key_env,
    }
    emit_one(call("POST", "/api/mcp-servers", json=compact(body)))


@mcp.command("update")
def mcp_update(name: McpName, url: Url = None, team: Teams = None, api_key_env: KeyEnv = None) -> None:
    """Change an MCP server's URL, teams (replaced by those given) or key variable."""
    teams = [find_team(t)["id"] for t in team] if team else None
    body = compact({"url": url, "allowed_team_ids": teams, "api_key_env": api_key_env})
    if not body:
        raise CliError("nothing to change: give --url, --team or --api-key-env")
    emit_one(call("PATCH", f"/api/mcp-servers/{name}", json=body))


@mcp.command("delete")
def mcp_delete(name: McpName, yes: Yes = False) -> None:
    """Remove an MCP server."""
    _confirm(yes, f"Remove MCP server {name}?")
    call("DELETE", f"/api/mcp-servers/{name}")
    typer.echo(f"Removed MCP server {name}.")


# -- terms of service ----------------------------------------------------------------------------------


@terms.command("show")
def terms_show() -> None:
    """The current terms of service (version and URL), if any."""
    emit_one(call("GET", "/api/terms"))


@terms.command("publish")
def terms_publish(
    version: Annotated[str, typer.Option(help="A new version, e.g. 2027-01")],
    url: Annotated[str, typer.Option(help="Where users read them (http or https)")],
) -> None:
    """Publish new terms: every user must accept them before their tokens work again."""
    emit_one(call("POST", "/api/terms", json={"version": version, "url": url}))
