"""An administrator runs the gateway from the command line, as the README shows: orgs, teams, users,
config-as-code with a dry run, the audit log, a past state, model access at a moment, replay and SQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Stack:
    stack.login_admin()
    return stack


def _json(stack: Stack, *args: str) -> object:
    return json.loads(stack.cli(*args).stdout)


def test_organisation_from_the_cli_and_its_audit_trail(admin: Stack) -> None:
    me = _json(admin, "whoami")
    assert isinstance(me, dict)
    admin_id = me["id"]

    org = _json(admin, "orgs", "create", "physics", "--sso-group", "physics-staff", "--rpm", "30")
    assert isinstance(org, dict) and org["name"] == "physics"
    created = datetime.now(UTC)
    team = _json(admin, "teams", "create", "lab", "--org-id", org["id"], "--description", "Laser lab")
    user = _json(admin, "users", "create", "alice@example.com", "--org-id", org["id"], "--name", "Alice")
    assert isinstance(team, dict) and isinstance(user, dict)
    _json(admin, "teams", "add-member", team["id"], user["id"], "--team-admin")

    orgs = admin.cli("orgs", "list").stdout
    assert "physics" in orgs and "physics-staff" in orgs
    teams = _json(admin, "teams", "list", "--org-id", org["id"], "--format", "json")
    assert [t["name"] for t in teams] == ["lab"]  # type: ignore[union-attr]

    events = _json(admin, "audit", "log", "--id", org["id"], "--format", "json")
    assert isinstance(events, list) and events
    assert events[0]["type"] == "OrgCreated" or events[0]["type"].startswith("Org")
    assert {e["actor"] for e in events} == {admin_id}  # every change names its actor

    past = _json(admin, "audit", "at", created.isoformat(), "--id", org["id"])
    assert isinstance(past, dict) and past["state"]["name"] == "physics"
    with pytest.raises(AssertionError, match="did not exist"):
        admin.cli("audit", "at", "2000-01-01T00:00:00+00:00", "--id", org["id"])


def test_apply_with_dry_run_then_for_real_is_idempotent(admin: Stack, tmp_path: Path, upstream) -> None:
    config = tmp_path / "more.yaml"
    config.write_text(
        f"""\
endpoints:
  - slug: second
    url: {upstream.url}
    provider: openai
models:
  - name: second-model
    endpoint: second
    upstream_model: fake-model
"""
    )
    dry = admin.cli("apply", str(config), "--dry-run").stdout
    assert "create endpoint second" in dry and "create model second-model" in dry
    assert "second-model" not in admin.cli("models", "list").stdout  # a dry run changes nothing

    applied = admin.cli("apply", str(config)).stdout
    assert "create model second-model" in applied
    assert "second-model" in admin.cli("models", "list").stdout
    assert admin.cli("apply", str(config)).stdout.strip() == "No changes."

    value = admin.cli("tokens", "create", "--name", "second", "--quiet").stdout.strip()
    client = openai.OpenAI(base_url=f"{admin.urls['proxy']}/v1", api_key=value)
    deadline = time.monotonic() + 5
    while True:  # the new model reaches the proxy through the snapshot
        try:
            answer = client.chat.completions.create(
                model="second-model", messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
            break
        except openai.NotFoundError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert answer.choices[0].message.content == "tok0"


def test_model_access_at_a_moment_and_replay(admin: Stack) -> None:
    admin.cli("tokens", "create", "--name", "access-check", "--quiet")
    now = datetime.now(UTC).isoformat()
    access = _json(admin, "audit", "model-access", "--model", "fake-model", "--time", now)
    assert isinstance(access, list)
    entry = next(a for a in access if a["name"] == "access-check")
    assert entry["limits"]["requests_per_minute"] == 100000  # the org default from aqueduct.yaml

    replayed = _json(admin, "replay")
    assert isinstance(replayed, dict)


def test_sql_is_read_only_and_needs_a_session(admin: Stack, tmp_path: Path) -> None:
    refused = admin.cli("sql", "DROP TABLE usage_events", check=False)
    assert refused.returncode == 2 and "400" in refused.stderr
    assert "count()" in admin.cli("sql", "SELECT count() FROM usage_events").stdout

    stranger = admin.cli("tokens", "list", check=False, env={"AQUEDUCT_CLI_HOME": str(tmp_path / "nobody")})
    assert stranger.returncode == 2 and "aqueduct login" in stranger.stderr
