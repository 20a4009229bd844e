"""An administrator runs a university's gateway from the command line, from a folder outside the repository
and outside the product's data folder, as the README shows: accounts, roles, teams, limits, budgets,
exclusions, service accounts, tokens, the catalogue, MCP servers, terms of service and the audit log."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import click
import openai
import pytest
import typer

from aqueduct_cli.main import app
from tests.support.stack import AQUEDUCT, Stack, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Cli:
    """The ``aqueduct`` command run by one person (their own config folder) from an unrelated folder."""

    def __init__(self, stack: Stack, home: Path, cwd: Path, by_url: bool = False) -> None:
        self.home, self.cwd = home, cwd
        # Nothing that points at the product: it must find it from the config folder alone.
        self.env = {
            k: v
            for k, v in stack.env.items()
            if k != "AQUEDUCT_DATA_DIR" and not (k.startswith("AQUEDUCT_") and k.endswith("_URL"))
        }
        self.env["AQUEDUCT_CLI_HOME"] = str(home)
        if by_url:  # another person's machine: told where the gateway is, as the README says
            self.env.update({f"AQUEDUCT_{name.upper()}_URL": url for name, url in stack.urls.items()})

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [AQUEDUCT, *args],
            cwd=self.cwd,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"aqueduct {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        if not check:
            return result.stdout + result.stderr
        return result.stdout

    def json(self, *args: str) -> object:
        return json.loads(self(*args))


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("cli-product")
    running = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(product: Stack, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    elsewhere = tmp_path_factory.mktemp("somewhere-else")
    # `aqueduct up` recorded where it runs in the user's config folder (AQUEDUCT_CLI_HOME of the stack).
    home = Path(product.env["AQUEDUCT_CLI_HOME"])
    cli = Cli(product, home, elsewhere)
    cli(
        "login", "--username", product.admin_username, "--password-stdin", input=product.admin_password + "\n"
    )
    return cli


def _wait_for(check, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, openai.APIStatusError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_every_command_and_option_has_help() -> None:
    missing = []

    def walk(command: click.Command, path: str) -> None:
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{path} {param.opts[0]}")
            if isinstance(param, click.Argument) and not getattr(param, "help", None):
                missing.append(f"{path} {param.name}")
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "aqueduct")
    assert missing == []


def test_cli_outside_any_product_folder_says_how_to_find_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQUEDUCT_")}
    env["AQUEDUCT_CLI_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [AQUEDUCT, "models", "list"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "aqueduct up" in result.stderr and "--directory-url" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["apply", "missing.yaml"], "cannot read missing.yaml: No such file or directory"),
        (["apply", "."], "cannot read .: Is a directory"),
        (["apply", "binary.yaml"], "cannot read binary.yaml: not a UTF-8 text file"),
        (["sql", "SELECT 1", "--format", "xml"], "'xml' is not one of table, json, csv"),
        (["users", "list", "--format", "yaml"], "'yaml' is not one of table, json, csv"),
        (["dead-letters", "list", "--format", "xml"], "'xml' is not one of table, json, csv"),
        (["audit", "log", "--format", "tsv"], "'tsv' is not one of table, json, csv"),
        # With an API token (AQUEDUCT_TOKEN) the local account would be refused after the user is made.
        (
            ["users", "create", "dave@uni.example", "--org", "o", "--username", "dave"],
            "needs a signed-in session",
        ),
    ],
)
def test_a_wrong_file_format_or_credential_is_a_clear_error_before_anything_is_asked(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """Nothing runs: no product is needed to be told that the file, the format or the credential is wrong
    (a format typo used to print a table, a missing file a traceback)."""
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00 not text")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQUEDUCT_")}
    env["AQUEDUCT_CLI_HOME"] = str(tmp_path / "home")
    env["AQUEDUCT_TOKEN"] = "aq-not-used"
    result = subprocess.run([AQUEDUCT, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["login", "--username", "admin", "--password-stdin"], ["logout"], ["orgs", "list"], ["whoami"]],
)
def test_a_product_that_is_down_is_one_line_not_a_traceback(tmp_path: Path, args: list[str]) -> None:
    """`aqueduct up` stopped (or killed) while its address is still recorded or given: every command,
    sign-in and the session refresh included, says it cannot reach it."""
    home = tmp_path / "home"
    home.mkdir()
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    expired = {"access_token": "x", "refresh_token": "r", "expires_at": 0}
    (home / "credentials.json").write_text(json.dumps({down: expired}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQUEDUCT_")}
    env |= {"AQUEDUCT_CLI_HOME": str(home), "AQUEDUCT_AUTH_URL": down, "AQUEDUCT_DIRECTORY_URL": down}
    result = subprocess.run(
        [AQUEDUCT, *args], cwd=tmp_path, env=env, input="secret\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "cannot reach http://127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
    if args == ["logout"]:  # forgotten here even though the product could not be told
        assert json.loads((home / "credentials.json").read_text()) == {}


@pytest.mark.parametrize(("config", "says"), [("missing.yaml", "No such file"), (".", "Is a directory")])
def test_up_refuses_a_config_file_it_cannot_read_before_starting_anything(
    tmp_path: Path, config: str, says: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQUEDUCT_")}
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [AQUEDUCT, "up", "--data-dir", str(data_dir), "--config", config],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"--config {config}: {says}" in result.stderr and "Traceback" not in result.stderr
    assert not data_dir.exists()  # nothing was started


@pytest.mark.parametrize("value", ["-1", "0", "0.5", "abc", "nan", "1e3s"])
@pytest.mark.parametrize("how", ["option", "env"])
def test_up_refuses_a_bad_ready_timeout_before_starting_anything(
    tmp_path: Path, how: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQUEDUCT_")}
    data_dir = tmp_path / "data"
    args = [AQUEDUCT, "up", "--data-dir", str(data_dir)]
    if how == "option":
        args += ["--ready-timeout", value]
    else:
        env["AQUEDUCT_READY_TIMEOUT"] = value
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "ready-timeout" in result.stderr and "Traceback" not in result.stderr
    assert not data_dir.exists()  # nothing was started


def test_accounts_roles_and_deactivation(admin: Cli, product: Stack, tmp_path: Path) -> None:
    org = admin.json("orgs", "create", "uni", "--sso-group", "uni-staff")
    assert isinstance(org, dict)
    team = admin.json("teams", "create", "physics", "--org", "uni", "--description", "Physics department")
    assert isinstance(team, dict) and team["org_id"] == org["id"]

    out = admin("users", "create", "alice@uni.test", "--org", "uni", "--name", "Alice", "--username", "alice")
    one_time = out.strip().splitlines()[-1]
    assert "alice" in out and len(one_time) >= 12

    # Alice signs in on her own machine: the one-time password must be replaced first.
    alice = Cli(product, tmp_path / "alice-home", tmp_path, by_url=True)
    alice("login", "--username", "alice", "--password-stdin", input=f"{one_time}\nalices-own-password\n")
    me = alice.json("whoami")
    assert isinstance(me, dict) and me["email"] == "alice@uni.test" and me["org_id"] == org["id"]
    assert "invalid" in alice(
        "login", "--username", "alice", "--password-stdin", input=one_time + "\n", check=False
    )

    admin("teams", "add-member", "uni/physics", "alice@uni.test")
    admin("teams", "promote", "uni/physics", "alice@uni.test")
    members = admin.json("teams", "members", "uni/physics", "--json")
    assert members == [
        {
            "user_id": me["id"],
            "team_admin": True,
            "joined_at": members[0]["joined_at"],  # type: ignore[index]
            "name": "Alice",
            "email": "alice@uni.test",
            "active": True,
            "org_admin": False,
            "admin": False,
        }
    ]
    admin("teams", "demote", "uni/physics", "alice@uni.test")
    assert admin.json("teams", "members", "uni/physics", "--json")[0]["team_admin"] is False  # type: ignore[index]
    admin("teams", "promote", "uni/physics", "alice@uni.test")

    assert "Org-Admin" in admin("users", "grant", "alice@uni.test", "org-admin")
    assert "Org-Admin" not in admin("users", "revoke", "alice@uni.test", "org-admin")
    assert "role must be one of" in admin("users", "grant", "alice@uni.test", "king", check=False)
    listed = admin.json("users", "list", "--org", "uni", "--search", "alice", "--json")
    assert [u["email"] for u in listed] == ["alice@uni.test"]  # type: ignore[union-attr]

    # Alice's token works; deactivated, it is refused within a second; reactivated, it works again.
    value = alice("tokens", "create", "--name", "laptop", "--quiet").strip()
    client = openai.OpenAI(base_url=f"{product.urls['proxy']}/v1", api_key=value, max_retries=0)

    def chat() -> str:
        answer = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
        return answer.choices[0].message.content or ""

    assert _wait_for(chat) == "tok0"
    admin("users", "deactivate", "alice@uni.test")
    started = time.monotonic()

    def refused() -> None:
        with pytest.raises(openai.AuthenticationError):
            chat()

    _wait_for(refused, seconds=1.0)
    assert time.monotonic() - started < 1.0
    assert "deactivated" in alice("whoami", check=False) or "401" in alice("whoami", check=False)
    admin("users", "reactivate", "alice@uni.test")
    assert _wait_for(chat) == "tok0"

    # Forgotten password: an Admin makes a new one-time password.
    reset = admin("users", "reset-password", "alice").strip().splitlines()[-1]
    alice("login", "--username", "alice", "--password-stdin", input=f"{reset}\nalices-second-password\n")
    accounts = admin.json("users", "accounts", "--json")
    assert {a["username"]: a["must_change_password"] for a in accounts}["alice"] is False  # type: ignore[union-attr]

    # Service accounts: Alice is Team-Admin of physics.
    out = alice(
        "service-accounts", "create", "uni/physics", "--name", "grader", "--description", "Grades homework"
    )
    sa_value = out.strip().splitlines()[-1]
    assert sa_value.startswith("aq-")
    sas = alice.json("service-accounts", "list", "uni/physics", "--json")
    assert [(s["name"], s["owner_email"]) for s in sas] == [("grader", "alice@uni.test")]  # type: ignore[union-attr]
    alice("service-accounts", "update", sas[0]["id"], "--description", "Grades exercises")  # type: ignore[index]
    alice("service-accounts", "delete", sas[0]["id"])  # type: ignore[index]
    assert alice.json("service-accounts", "list", "uni/physics", "--json") == []


def test_limits_budgets_and_exclusions_at_every_level(admin: Cli) -> None:
    admin("orgs", "create", "lab")
    admin("teams", "create", "optics", "--org", "lab", "--description", "Optics group")
    admin("users", "create", "bob@lab.test", "--org", "lab", "--name", "Bob")

    assert "requests_per_minute=50" in admin("orgs", "limits", "lab", "--rpm", "50")
    assert "daily_usd=2.5" in admin("orgs", "budgets", "lab", "--daily-usd", "2.5")
    assert "daily_usd=0.000000001" in admin("teams", "budgets", "lab/optics", "--daily-usd", "1e-9")
    assert "fake-model" in admin("orgs", "exclude", "lab", "fake-model")
    admin("orgs", "exclude", "lab")  # cleared
    admin("teams", "limits", "lab/optics", "--rpm", "20", "--itpm", "1000")
    # Budgets at a level are replaced as a whole: the one this drops is named, not removed silently.
    replaced = admin("teams", "budgets", "lab/optics", "--monthly-usd", "30")
    assert "monthly_usd=30 (removed: daily_usd=0.000000001; give every budget to keep)" in replaced
    admin("teams", "model-limits", "lab/optics", "fake-model", "--otpm", "500")
    admin("users", "limits", "bob@lab.test", "--rpm", "5")
    admin("users", "budgets", "bob@lab.test", "--daily-tokens", "10000")
    admin("users", "exclude", "bob@lab.test", "fake-model")

    org = admin.json("orgs", "show", "lab")
    team = admin.json("teams", "show", "lab/optics")
    bob = admin.json("users", "show", "bob@lab.test")
    assert org["limits"] == {"requests_per_minute": 50} and org["budgets"] == {"daily_usd": "2.5"}  # type: ignore[index]
    assert org["excluded_models"] == []  # type: ignore[index]
    assert team["limits"] == {"requests_per_minute": 20, "input_tokens_per_minute": 1000}  # type: ignore[index]
    assert team["budgets"] == {"monthly_usd": "30"}  # type: ignore[index]
    assert team["model_limits"] == {"fake-model": {"output_tokens_per_minute": 500}}  # type: ignore[index]
    assert bob["limits"] == {"requests_per_minute": 5} and bob["budgets"] == {"daily_tokens": 10000}  # type: ignore[index]
    assert bob["excluded_models"] == ["fake-model"]  # type: ignore[index]

    assert "positive" in admin("users", "budgets", "bob@lab.test", "--daily-usd", "-1", check=False)
    admin("teams", "limits", "lab/optics", "--clear")
    assert admin.json("teams", "show", "lab/optics")["limits"] == {}  # type: ignore[index]
    admin("teams", "update", "lab/optics", "--description", "Optics and photonics")
    admin("teams", "delete", "lab/optics", "--yes")
    assert "no team named" in admin("teams", "show", "lab/optics", check=False)

    # Names with a "/" of their own: ORG/TEAM finds the one team they can mean.
    admin("orgs", "create", "r&d/west")
    admin("teams", "create", "lenses", "--org", "r&d/west")
    admin("teams", "create", "x/y", "--org", "lab")
    assert admin.json("teams", "show", "r&d/west/lenses")["name"] == "lenses"  # type: ignore[index]
    assert admin.json("teams", "show", "lab/x/y")["name"] == "x/y"  # type: ignore[index]
    admin("orgs", "create", "lab/x")
    admin("teams", "create", "y", "--org", "lab/x")  # "lab/x/y": lab's x/y or lab/x's y
    assert "several teams match" in admin("teams", "show", "lab/x/y", check=False)
    assert "no team named" in admin("teams", "show", "lab/nothing/here", check=False)


def test_tokens_catalogue_mcp_terms_and_audit(admin: Cli, upstream) -> None:
    out = admin("tokens", "create", "--name", "ci", "--expires-at", "2099-01-01T00:00:00Z")
    token_id = out.split("(")[1].split(")")[0]
    assert "expires 2099-01-01" in out
    assert "never" in admin("tokens", "update", token_id, "--no-expiry")
    new_value = admin("tokens", "regenerate", token_id, "--expires-at", "2098-01-01T00:00:00Z").strip()
    assert new_value.startswith("aq-")
    listed = admin.json("tokens", "list", "--search", "ci", "--json")
    assert [t["expires_at"][:10] for t in listed] == ["2098-01-01"]  # type: ignore[index]

    admin("endpoints", "create", "second", "--url", upstream.url, "--provider", "openai")
    admin("models", "create", "second-model", "--endpoint", "second", "--upstream-model", "fake-model",
          "--input-price", "0.5", "--output-price", "1.5")  # fmt: skip
    admin("models", "update", "second-model", "--input-price", "0.75")
    models = admin.json("models", "list", "--json")
    second = next(m for m in models if m["name"] == "second-model")  # type: ignore[union-attr]
    assert second["input_price_per_million"] == "0.75" and second["available"] is True
    admin("endpoints", "update", "second", "--url", upstream.url.replace("127.0.0.1", "localhost"))
    admin("models", "delete", "second-model", "--yes")
    admin("endpoints", "delete", "second", "--yes")
    assert "second" not in admin("endpoints", "list")

    admin("orgs", "create", "tools-org")
    admin("teams", "create", "ml", "--org", "tools-org", "--description", "Machine learning")
    admin("mcp", "create", "search", "--url", "http://127.0.0.1:9/mcp", "--team", "tools-org/ml")
    assert "search" in admin("mcp", "list")
    admin("mcp", "update", "search", "--url", "http://127.0.0.1:10/mcp")
    admin("mcp", "delete", "search", "--yes")
    assert "search" not in admin("mcp", "list")

    assert admin.json("terms", "show") == {}

    # The newest change first; the whole log pages.
    first = admin.json("audit", "log", "--limit", "1", "--json")
    assert first[0]["type"] == "McpServerRemoved" or first[0]["type"].endswith("Removed")  # type: ignore[index]
    page2 = admin.json("audit", "log", "--limit", "1", "--page", "2", "--json")
    assert page2[0]["notification_id"] == first[0]["notification_id"] - 1  # type: ignore[index]
    cursor = str(first[0]["notification_id"])  # type: ignore[index]
    # By cursor: the events older than the last one shown, the same page while new events arrive.
    assert admin.json("audit", "log", "--limit", "1", "--before", cursor, "--json") == page2
    table = subprocess.run(
        [AQUEDUCT, "audit", "log", "--limit", "3"],
        cwd=admin.cwd,
        env=admin.env,
        capture_output=True,
        text=True,
    )
    assert "next: --page 2" in table.stderr and " of " in table.stderr
    assert admin.json("audit", "log", "--type", "TokenExpiryChanged", "--json")
    kinds = {e["aggregate_type"] for e in admin.json("audit", "log", "--kind", "Team", "--json")}  # type: ignore[union-attr]
    assert kinds == {"Team"}


def test_terms_published_from_the_cli_block_tokens_until_accepted(admin: Cli, product: Stack) -> None:
    """Last in this module: once published, every user must accept the terms."""
    value = admin("tokens", "create", "--name", "terms-check", "--quiet").strip()
    client = openai.OpenAI(base_url=f"{product.urls['proxy']}/v1", api_key=value, max_retries=0)
    published = admin.json("terms", "publish", "--version", "2027-01", "--url", "https://uni.test/terms")
    assert published["version"] == "2027-01"  # type: ignore[index]
    assert admin.json("terms", "show")["url"] == "https://uni.test/terms"  # type: ignore[index]

    def blocked() -> None:
        with pytest.raises(openai.PermissionDeniedError, match="terms of service"):
            client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])

    _wait_for(blocked)
