"""Every token class priced, end to end: ``aqueduct up`` with models priced per class in aqueduct.yaml,
requests whose usage comes in OpenAI's shape (prompt tokens include cached ones, reasoning inside the
completion) and in Anthropic's (input tokens exclude what was read from or written to the cache), plain,
streamed, cut short and cache-write heavy; each row's cost compared with nano-dollars worked out by hand,
and the classes shown apart in the usage report and its CSV. A model alias is recorded with its model.

Prices (per million tokens -> nano-dollars per token):
- ``priced-chat`` (OpenAI-compatible test upstream): input $2 -> 2000, output $10 -> 10000, cached input
  $0.50 -> 500, reasoning $20 -> 20000.
- ``priced-claude`` (Anthropic-format test upstream): input $3 -> 3000, output $15 -> 15000, cache read
  $0.30 -> 300, cache write (5 minutes) $3.75 -> 3750, cache write (1 hour) $6 -> 6000.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aqueduct_cli.embedded import free_port, wait_for_port
from tests.support.stack import ROOT, Stack, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "sk-ant-" + uuid.uuid4().hex
TEN = " ".join(f"w{i}" for i in range(10))
TWENTY = " ".join(f"w{i}" for i in range(20))
THIRTY = " ".join(f"w{i}" for i in range(30))
TWELVE = " ".join(f"w{i}" for i in range(12))


@pytest.fixture(scope="module")
def claude_upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.anthropic_upstream", "--port", str(port), "--api-key", KEY],
        cwd=ROOT,
    )
    wait_for_port("127.0.0.1", port, process=process)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def priced_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: Any, claude_upstream: str
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("token-classes")
    config = write_config(workdir / "aqueduct.yaml", upstream.url)
    text = config.read_text().replace(
        "models:\n",
        f"""\
  - slug: claude-fake
    url: {claude_upstream}/v1
    provider: anthropic
    api_key: ${{FAKE_ANTHROPIC_KEY}}
models:
  - name: priced-chat
    endpoint: fake
    upstream_model: priced-upstream
    aliases: [gpt-priced-alias]
    input_price_per_million: 2
    output_price_per_million: 10
    cached_input_price_per_million: 0.5
    reasoning_price_per_million: 20
  - name: priced-claude
    endpoint: claude-fake
    upstream_model: claude-upstream
    input_price_per_million: 3
    output_price_per_million: 15
    cached_input_price_per_million: 0.3
    cache_write_price_per_million: 3.75
    cache_write_1h_price_per_million: 6
""",
        1,
    )
    config.write_text(text)
    stack = Stack(workdir, config, env={"FAKE_ANTHROPIC_KEY": KEY}).start()
    stack.login_admin()
    yield stack
    stack.stop()


_COLUMNS = (
    "alias, model, input_tokens, cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens, "
    "output_tokens, reasoning_tokens, cost_nanos, streamed, cut_short"
)


def _rows(stack: Stack, token_id: str, expected: int) -> list[dict[str, Any]]:
    query = f"SELECT {_COLUMNS} FROM usage_events WHERE token_id = '{token_id}' ORDER BY cost_nanos"
    deadline = time.monotonic() + 20
    while True:
        rows = json.loads(stack.cli("sql", query, "--format", "json").stdout)
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_every_token_class_is_priced_from_both_usage_shapes(
    priced_stack: Stack, claude_upstream: str
) -> None:
    stack = priced_stack
    value = stack.cli("tokens", "create", "--name", "classes", "--management", "--quiet").stdout.strip()
    tokens = json.loads(stack.cli("tokens", "list", "--format", "json").stdout)
    token_id = next(t["id"] for t in tokens if t["name"] == "classes")
    chat = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value, max_retries=0)
    messages = anthropic.Anthropic(base_url=stack.urls["proxy"], api_key=value, max_retries=0)

    # OpenAI's shape, whole, by the alias: 10 prompt tokens of which 6 cached; 4 + 3 reasoning output.
    chat.chat.completions.create(
        model="gpt-priced-alias",
        messages=[{"role": "user", "content": TEN}],
        max_tokens=4,
        extra_headers={"x-fake-cached-tokens": "6", "x-fake-reasoning-tokens": "3"},
    )
    # OpenAI's shape, streamed: 10 prompt tokens, 4 cached; 2 + 1 reasoning output.
    list(
        chat.chat.completions.create(
            model="priced-chat",
            messages=[{"role": "user", "content": TEN}],
            max_tokens=2,
            stream=True,
            extra_headers={"x-fake-cached-tokens": "4", "x-fake-reasoning-tokens": "1"},
        )
    )
    # Anthropic's shape, whole: 20 prompt words, 8 read from the cache, 6 and 4 written; 5 output.
    messages.messages.create(
        model="priced-claude",
        max_tokens=5,
        messages=[{"role": "user", "content": TWENTY}],
        extra_headers={"x-fake-cache-read": "8", "x-fake-cache-write-5m": "6", "x-fake-cache-write-1h": "4"},
    )
    # Anthropic's shape, streamed and cache-write heavy: 30 words, 25 written for an hour; 3 output.
    with messages.messages.stream(
        model="priced-claude",
        max_tokens=3,
        messages=[{"role": "user", "content": THIRTY}],
        extra_headers={"x-fake-cache-write-1h": "25"},
    ) as stream:
        stream.until_done()
    # Cut short: the upstream breaks off after 2 words (an overloaded error event); 12 words, 10 cached.
    httpx.post(claude_upstream + "/_fail", json={"stream_error_after": 2, "times": 1})
    with messages.messages.stream(
        model="priced-claude",
        max_tokens=6,
        messages=[{"role": "user", "content": TWELVE}],
        extra_headers={"x-fake-cache-read": "10"},
    ) as stream:
        with pytest.raises(anthropic.APIStatusError):
            stream.until_done()

    rows = _rows(stack, token_id, 5)
    got = [
        (
            r["alias"], r["model"], r["input_tokens"], r["cached_tokens"], r["cache_write_5m_tokens"],
            r["cache_write_1h_tokens"], r["output_tokens"], r["reasoning_tokens"], r["cost_nanos"],
            r["streamed"], r["cut_short"],
        )
        for r in rows
    ]  # fmt: skip
    assert got == [
        # 2*3000 + 10*300 + 2*15000 (the 2 words relayed; the provisional count said 1)
        ("", "priced-claude", 12, 10, 0, 0, 2, 0, 39_000, True, True),
        # 6*2000 + 4*500 + 2*10000 + 1*20000
        ("", "priced-chat", 10, 4, 0, 0, 3, 1, 54_000, True, False),
        # 4*2000 + 6*500 + 4*10000 + 3*20000
        ("gpt-priced-alias", "priced-chat", 10, 6, 0, 0, 7, 3, 111_000, False, False),
        # 2*3000 + 8*300 + 6*3750 + 4*6000 + 5*15000
        ("", "priced-claude", 20, 8, 6, 4, 5, 0, 129_900, False, False),
        # 5*3000 + 25*6000 + 3*15000
        ("", "priced-claude", 30, 0, 0, 25, 3, 0, 210_000, True, False),
    ]

    # The report and its CSV show the classes apart (the token acts as its Admin: everyone's usage, so
    # filtered to this token).
    headers = {"Authorization": f"Bearer {value}"}
    summary = httpx.get(
        f"{stack.urls['accounting']}/api/usage/summary",
        params={"group_by": "token"},
        headers=headers,
        timeout=10,
    ).json()
    (mine,) = [g for g in summary["groups"] if g["key"] == token_id]
    assert (
        mine["input_tokens"], mine["cached_tokens"], mine["cache_write_5m_tokens"],
        mine["cache_write_1h_tokens"], mine["output_tokens"], mine["reasoning_tokens"], mine["cost_nanos"],
    ) == (82, 28, 6, 29, 20, 4, 543_900)  # fmt: skip
    exported = httpx.get(
        f"{stack.urls['accounting']}/api/usage/export.csv",
        params={"group_by": "token"},
        headers=headers,
        timeout=10,
    )
    table = list(csv.DictReader(io.StringIO(exported.text)))
    (line,) = [row for row in table if row["token"] == token_id]
    assert (line["cache_write_5m_tokens"], line["cache_write_1h_tokens"], line["reasoning_tokens"]) == (
        "6",
        "29",
        "4",
    )


def test_aliases_and_endpoint_settings_show_in_the_cli(priced_stack: Stack) -> None:
    models = json.loads(priced_stack.cli("models", "list", "--format", "json").stdout)
    priced = next(m for m in models if m["name"] == "priced-chat")
    assert priced["aliases"] == ["gpt-priced-alias"] and priced["cached_input_price_per_million"] == "0.5"
    endpoints = json.loads(priced_stack.cli("endpoints", "list", "--format", "json").stdout)
    assert all(e["responses"] is True for e in endpoints)
    # An alias set from the CLI works at once on the proxy; one naming another model is refused.
    assert priced_stack.cli("models", "aliases", "priced-claude", "claude-sonnet-4-5").stdout.strip() == (
        "claude-sonnet-4-5"
    )
    taken = priced_stack.cli("models", "aliases", "priced-claude", "priced-chat", check=False)
    assert taken.returncode != 0 and "another model" in taken.stderr
    value = priced_stack.cli("tokens", "create", "--name", "alias-user", "--quiet").stdout.strip()
    client = anthropic.Anthropic(base_url=priced_stack.urls["proxy"], api_key=value, max_retries=0)
    deadline = time.monotonic() + 5
    while True:
        try:
            answer = client.messages.create(
                model="claude-sonnet-4-5", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
            )
            break
        except anthropic.NotFoundError:
            assert time.monotonic() < deadline, "the alias never reached the proxy"
            time.sleep(0.1)
    assert answer.content[0].text == "tok0 tok1"
