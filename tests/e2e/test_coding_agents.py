"""The real coding agents through the gateway, as an organisation runs them: ``aqueduct up`` against a
local OpenAI-compatible server that speaks only chat completions (tests/support/upstream.py).

- Claude Code (npm ``@anthropic-ai/claude-code``) speaks Anthropic's Messages API: ``/v1/messages``,
  translated by the gateway into chat completions.
- The Codex CLI (npm ``@openai/codex``) speaks the Responses API: ``/v1/responses``, translated likewise
  for an endpoint marked ``responses: false``.

Both are pinned in tests/agents/package-lock.json and installed by tests/agents/install.sh
(``make test-deps``); without them (or without npm) these tests are skipped with that reason. Each agent
runs non-interactively (``claude -p``, ``codex exec``) with its home in a temporary folder, so nothing of
the machine's own configuration or credentials is read, and every request it makes must appear as a usage
row whose token counts are exactly those the upstream reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.stack import ROOT, Stack, write_config
from tests.support.upstream import count_words

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AGENTS = ROOT / "tests" / "agents" / "node_modules" / ".bin"
CLAUDE = AGENTS / "claude"
CODEX = AGENTS / "codex"
OUTPUT_TOKENS = 7


def _require(binary: Path) -> None:
    if not binary.exists():
        pytest.skip(
            f"{binary.name} is not installed: run tests/agents/install.sh (make test-deps; needs npm)"
        )


def _upstream_requests(upstream_base: str) -> list[dict[str, Any]]:
    return list(httpx.get(upstream_base + "/_requests").json())


def _usage_rows(stack: Stack, token_id: str, expected: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    query = (
        "SELECT route, model, endpoint, status_code, input_tokens, output_tokens, streamed, cut_short "
        f"FROM usage_events WHERE token_id = '{token_id}' ORDER BY occurred_at"
    )
    deadline = time.monotonic() + timeout
    while True:
        rows = json.loads(stack.cli("sql", query, "--format", "json").stdout)
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _token(stack: Stack, name: str) -> tuple[str, str]:
    value = stack.cli("tokens", "create", "--name", name, "--quiet").stdout.strip()
    tokens = json.loads(stack.cli("tokens", "list", "--format", "json").stdout)
    return value, next(t["id"] for t in tokens if t["name"] == name)


@pytest.fixture(scope="module")
def agents_stack(tmp_path_factory: pytest.TempPathFactory, upstream: Any) -> Any:
    """The product with the test upstream twice: as an endpoint with the Responses API (the default for
    provider openai) and as one marked ``responses: false`` (a local server with chat completions only)."""
    workdir = tmp_path_factory.mktemp("agents-stack")
    extra = f"""\
extra_endpoints:
  - slug: local-chat
    url: {upstream.url}
    provider: openai
    responses: false
extra_models:
  - name: local-model
    endpoint: local-chat
    upstream_model: local-upstream-model
"""
    config = write_config(workdir / "aqueduct.yaml", upstream.url)
    config.write_text(_merge(config.read_text(), extra))
    stack = Stack(workdir, config).start()
    stack.login_admin()
    yield stack
    stack.stop()


def _merge(base: str, extra: str) -> str:
    """``base`` with the endpoints and models of ``extra`` appended to its own lists."""
    endpoints, models = extra.split("extra_models:\n")
    endpoints = endpoints.removeprefix("extra_endpoints:\n")
    base = base.replace("models:\n", endpoints + "models:\n", 1)
    return base.replace("orgs:\n", models + "orgs:\n", 1)


def test_claude_code_completes_a_prompt_through_the_gateway(
    agents_stack: Stack, upstream: Any, tmp_path: Path
):
    _require(CLAUDE)
    stack = agents_stack
    value, token_id = _token(stack, "claude-code")
    httpx.delete(upstream.base + "/_requests")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": stack.urls["proxy"],
        "ANTHROPIC_AUTH_TOKEN": value,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_MODEL": "local-model",
        "ANTHROPIC_SMALL_FAST_MODEL": "local-model",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "local-model",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(OUTPUT_TOKENS),
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
    }
    result = subprocess.run(
        [str(CLAUDE), "-p", "Say hello to the gateway", "--model", "local-model"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"claude failed:\n{result.stdout}\n{result.stderr}"
    assert " ".join(f"tok{i}" for i in range(OUTPUT_TOKENS)) in result.stdout

    seen = [r for r in _upstream_requests(upstream.base) if r["path"] == "/v1/chat/completions"]
    assert seen, "Claude Code's requests never reached the upstream"
    for request in seen:
        assert request["body"]["model"] == "local-upstream-model"
        assert value not in json.dumps(request["headers"])  # the client's token stays at the gateway
    rows = _usage_rows(stack, token_id, len(seen))
    assert all(r["route"] == "/v1/messages" and r["status_code"] == 200 for r in rows), rows
    # Exact: each row holds what the upstream counted for one of the requests it served.
    expected = sorted((count_words(r["body"]["messages"]), r["body"]["max_tokens"]) for r in seen)
    assert sorted((r["input_tokens"], r["output_tokens"]) for r in rows) == expected
    assert all(r["model"] == "local-model" and r["endpoint"] == "local-chat" for r in rows)


def test_codex_completes_a_prompt_through_the_gateway(agents_stack: Stack, upstream: Any, tmp_path: Path):
    _require(CODEX)
    stack = agents_stack
    value, token_id = _token(stack, "codex")
    httpx.delete(upstream.base + "/_requests")
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        f"""\
model = "local-model"
model_provider = "aqueduct"

[model_providers.aqueduct]
name = "Aqueduct"
base_url = "{stack.urls["proxy"]}/v1"
env_key = "AQUEDUCT_API_KEY"
wire_api = "responses"
"""
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(codex_home),
        "AQUEDUCT_API_KEY": value,
    }
    result = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "Say hello to the gateway"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"codex failed:\n{result.stdout}\n{result.stderr}"
    assert "tok0 tok1 tok2" in result.stdout

    seen = [r for r in _upstream_requests(upstream.base) if r["path"] == "/v1/chat/completions"]
    assert seen, "Codex's requests never reached the upstream as chat completions"
    for request in seen:
        assert request["body"]["model"] == "local-upstream-model"
        assert value not in json.dumps(request["headers"])
    rows = _usage_rows(stack, token_id, len(seen))
    assert all(r["route"] == "/v1/responses" and r["status_code"] == 200 for r in rows), rows
    expected = sorted((count_words(r["body"]["messages"]), _output(r["body"])) for r in seen)
    assert sorted((r["input_tokens"], r["output_tokens"]) for r in rows) == expected
    assert all(r["model"] == "local-model" and r["endpoint"] == "local-chat" for r in rows)


def _output(body: dict[str, Any]) -> int:
    """What the test upstream answers: max_tokens words, else 5."""
    return body["max_tokens"] if isinstance(body.get("max_tokens"), int) else 5
