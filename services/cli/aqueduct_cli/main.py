"""The ``aqueduct`` command: run the product, run one service, administer it, query usage, audit."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml

from aqueduct_cli import access, admin, audit, catalog, dead_letters
from aqueduct_cli.client import SERVICE_NAMES, ApiClient, CliError, PasswordChangeRequired
from aqueduct_cli.common import Format
from aqueduct_cli.launcher import SERVICES, WORKERS, Launcher, LaunchOptions
from aqueduct_cli.output import print_rows

__all__ = ["app"]

app = typer.Typer(
    help="Aqueduct AI gateway: run it (`aqueduct up`), administer it, query usage, audit it.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(admin.orgs, name="orgs")
app.add_typer(admin.teams, name="teams")
app.add_typer(admin.users, name="users")
app.add_typer(access.tokens, name="tokens")
app.add_typer(access.service_accounts, name="service-accounts")
app.add_typer(catalog.endpoints, name="endpoints")
app.add_typer(catalog.models, name="models")
app.add_typer(catalog.mcp, name="mcp")
app.add_typer(catalog.terms, name="terms")
app.add_typer(audit.audit, name="audit")
app.add_typer(dead_letters.dead_letters, name="dead-letters")


def _url_option(service: str) -> Any:
    return typer.Option(
        f"--{service}-url",
        help=f"The {service} service's URL (default: the running `aqueduct up`, or AQUEDUCT_{service.upper()}_URL)",
        show_default=False,
    )


@app.callback()
def _where(
    directory_url: Annotated[str | None, _url_option("directory")] = None,
    auth_url: Annotated[str | None, _url_option("auth")] = None,
    accounting_url: Annotated[str | None, _url_option("accounting")] = None,
    proxy_url: Annotated[str | None, _url_option("proxy")] = None,
    ui_url: Annotated[str | None, _url_option("ui")] = None,
) -> None:
    """Aqueduct AI gateway: run it (`aqueduct up`), administer it, query usage, audit it.

    Admin commands find the running product from any folder (`aqueduct up` records where it is);
    the --<service>-url flags and AQUEDUCT_<SERVICE>_URL variables override that.
    """
    given = dict(
        zip(SERVICE_NAMES, (directory_url, auth_url, accounting_url, proxy_url, ui_url), strict=True)
    )
    for service, url in given.items():
        if url:
            os.environ[f"AQUEDUCT_{service.upper()}_URL"] = url


DataDir = Annotated[Path, typer.Option(envvar="AQUEDUCT_DATA_DIR", help="Folder for all local state")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", envvar="AQUEDUCT_CONFIG_FILE", help="aqueduct.yaml to apply at start"),
]


def _first_model(config: Path | None) -> str:
    """A model name from the configuration, so the printed snippet runs as it is."""
    if config is None or not config.exists():
        return "<model>"
    try:
        models = (yaml.safe_load(config.read_text()) or {}).get("models") or []
        return str(models[0]["name"]) if models else "<model>"
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return "<model>"


def _snippet(proxy_url: str, model: str) -> str:
    return (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{proxy_url}/v1", api_key="<your aqueduct token>")\n'
        f'answer = client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hi"}}])\n'
        "print(answer.choices[0].message.content)"
    )


@app.command()
def up(
    data_dir: DataDir = Path(".aqueduct"),
    config: ConfigFile = None,
    host: Annotated[
        str, typer.Option(envvar="AQUEDUCT_HOST", help="Address the services listen on")
    ] = "127.0.0.1",
    ready_timeout: Annotated[
        float,
        typer.Option(
            envvar="AQUEDUCT_READY_TIMEOUT",
            min=1,
            help="Seconds the services have to become ready (a large directory on a busy machine needs more)",
        ),
    ] = 90.0,
) -> None:
    """Run the whole product on this machine (NATS, Valkey, SQLite, chDB); Ctrl-C stops everything."""
    if config is None and Path("aqueduct.yaml").exists():
        config = Path("aqueduct.yaml")
    if config is not None:  # checked before anything starts: the directory would die on it with a traceback
        try:
            config.read_bytes()
        except OSError as exc:
            print(f"aqueduct: --config {config}: {exc.strerror or exc}; nothing was started", file=sys.stderr)
            raise typer.Exit(2) from exc
    options = LaunchOptions(data_dir=data_dir, config_file=config, host=host, ready_timeout=ready_timeout)
    try:
        launcher = Launcher(options)
    except ValueError as exc:  # a setting out of range: nothing started
        print(f"aqueduct: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2) from exc
    signal.signal(signal.SIGTERM, launcher.request_stop)
    signal.signal(signal.SIGINT, launcher.request_stop)
    try:
        info = launcher.start()
        urls = info["urls"]
        assert isinstance(urls, dict)
        lines = ["", "Aqueduct is running.", ""]
        lines += [f"  {name:<11} {url}" for name, url in urls.items()]
        lines += ["", f"  OpenAI base URL: {urls['proxy']}/v1", f"  data folder:     {info['data_dir']}"]
        if info["first_start"]:
            lines += [
                "",
                "  First start: the bootstrap admin (shown once, store it now):",
                f"    username: {info['admin_username']}",
                f"    password: {info['admin_password']}",
            ]
        lines += [
            "",
            "  Sign in to the CLI with `aqueduct login`, create a token with `aqueduct tokens create --name dev`,",
            "  or use the web UI. Then, with the OpenAI SDK:",
            "",
            *("    " + line for line in _snippet(str(urls["proxy"]), _first_model(config)).splitlines()),
            "",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)
        launcher.supervise()
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"aqueduct: start failed: {exc}", file=sys.stderr, flush=True)
        launcher.stop()
        raise typer.Exit(1) from exc
    finally:
        launcher.stop()
    print("aqueduct: stopped.", flush=True)


def _run_service(name: str) -> None:
    os.execv(sys.executable, [sys.executable, "-m", f"aqueduct_{name}", *sys.argv[2:]])


for _service in SERVICES:
    app.command(name=_service, help=f"Run the {_service} service alone (for containers).")(
        lambda _name=_service: _run_service(_name)
    )


def _run_worker(module: str) -> None:
    os.execv(sys.executable, [sys.executable, "-m", module, *sys.argv[2:]])


for _worker, _module in WORKERS.items():
    app.command(name=_worker, help=f"Run the {_worker} process alone (for containers).")(
        lambda _m=_module: _run_worker(_m)
    )


@app.command()
def login(
    username: Annotated[str, typer.Option(prompt=True, help="The local account's username")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from stdin (and, for a one-time password, the new one from the next line)",
        ),
    ] = False,
) -> None:
    """Sign in with a local account; the session is kept for later commands. A one-time password (from
    an Admin) is replaced by one you choose first."""
    client = ApiClient()

    def read(prompt: str, confirm: bool = False) -> str:
        if password_stdin:
            return sys.stdin.readline().rstrip("\n")
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))

    password = read("Password")
    try:
        client.login(username, password)
    except PasswordChangeRequired:
        typer.echo("This password works once: choose your own (at least 8 characters).", err=True)
        new_password = read("New password", confirm=True)
        client.change_password(username, password, new_password)
        client.login(username, new_password)
    typer.echo("Signed in.")


@app.command("passwd")
def change_password(
    username: Annotated[str, typer.Option(prompt=True, help="The local account's username")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the current, then the new password from stdin")
    ] = False,
) -> None:
    """Change a local account's password (proving the current one)."""

    def read(prompt: str, confirm: bool = False) -> str:
        if password_stdin:
            return sys.stdin.readline().rstrip("\n")
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))

    current = read("Current password")
    ApiClient().change_password(username, current, read("New password", confirm=True))
    typer.echo("Password changed.")


@app.command()
def whoami() -> None:
    """Who the CLI is signed in as, with roles and teams."""
    typer.echo(json.dumps(ApiClient().request("GET", "directory", "/api/me"), indent=2, default=str))


@app.command()
def logout() -> None:
    """Sign out and forget the stored session."""
    ApiClient().logout()
    typer.echo("Signed out.")


@app.command()
def sql(
    query: Annotated[
        str, typer.Argument(help="One read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)")
    ],
    output: Format = "table",
) -> None:
    """Run read-only SQL (ClickHouse dialect) over usage and audit tables (Admins)."""
    answer: dict[str, Any] = ApiClient().request("POST", "accounting", "/api/sql", json={"query": query})
    print_rows(answer["columns"], answer["rows"], output)


@app.command()
def replay() -> None:
    """Rebuild the proxy's auth snapshot (and other projections) from the directory's events."""
    answer = ApiClient().request("POST", "directory", "/api/admin/replay")
    typer.echo(json.dumps(answer, indent=2, default=str))


@app.command()
def apply(
    file: Annotated[Path, typer.Argument(help="aqueduct.yaml")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would change")] = False,
) -> None:
    """Apply a configuration file (endpoints, models, orgs, teams, limits) idempotently."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a UTF-8 text file"
        raise CliError(f"cannot read {file}: {reason}") from exc
    answer = ApiClient().request(
        "POST",
        "directory",
        "/api/config/apply",
        params={"dry_run": str(dry_run).lower()},
        content=text,
        headers={"Content-Type": "application/yaml"},
    )
    changes = answer.get("changes", answer) if isinstance(answer, dict) else answer
    if not changes:
        typer.echo("No changes.")
    for change in changes or []:
        typer.echo(change if isinstance(change, str) else json.dumps(change, default=str))


def main() -> None:
    try:
        app()
    except CliError as exc:
        typer.echo(f"aqueduct: {exc}", err=True)
        raise SystemExit(2) from exc
    except httpx.TransportError as exc:
        # Any call the commands make (sign-in, refresh, sign-out, the APIs) to a product that is down or
        # elsewhere: one line, not a traceback.
        try:
            where = f" {exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
        except RuntimeError:
            where = ""
        typer.echo(
            f"aqueduct: cannot reach{where} ({exc or type(exc).__name__}): is `aqueduct up` running? "
            "Otherwise pass --<service>-url or set AQUEDUCT_<SERVICE>_URL",
            err=True,
        )
        raise SystemExit(2) from exc
