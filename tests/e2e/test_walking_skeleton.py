"""The walking skeleton, as a newcomer walks it: `make up`, a token from the CLI, the OpenAI SDK, SQL.

Runs the product exactly as the README says (``aqueduct up``) in a temporary folder, against the
OpenAI-compatible test upstream.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.stack import Stack, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _token_id(stack: Stack, name: str) -> str:
    tokens = json.loads(stack.cli("tokens", "list", "--format", "json").stdout)
    return next(t["id"] for t in tokens if t["name"] == name)


def _usage_rows(stack: Stack, token_id: str, expected: int, timeout: float = 2.0) -> list[dict]:
    query = (
        "SELECT model, token_id, input_tokens, output_tokens, streamed FROM usage_events "
        f"WHERE token_id = '{token_id}' ORDER BY occurred_at"
    )
    deadline = time.monotonic() + timeout
    while True:
        rows = json.loads(stack.cli("sql", query, "--format", "json").stdout)
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.fixture(scope="module")
def signed_in(stack: Stack) -> Stack:
    stack.login_admin()
    return stack


def test_token_from_cli_calls_model_and_usage_is_in_sql(signed_in: Stack) -> None:
    stack = signed_in
    value = stack.cli("tokens", "create", "--name", "skeleton", "--quiet").stdout.strip()
    assert value.startswith("aq-")
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value)

    answer = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hello there gateway"}],
        max_tokens=4,
    )
    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3"
    assert answer.usage is not None and answer.usage.prompt_tokens == 3

    chunks = list(
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "stream me five words please"}],
            max_tokens=6,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5"
    # The client did not ask for usage, so the usage chunk the gateway requested upstream is not passed on.
    assert all(c.usage is None for c in chunks)

    answered = time.monotonic()
    token_id = _token_id(stack, "skeleton")
    # One look, two seconds after the last answer: the rows must be there by then.
    time.sleep(max(0.0, answered + 2.0 - time.monotonic()))
    rows = _usage_rows(stack, token_id, expected=2, timeout=0)
    assert [(r["model"], r["input_tokens"], r["output_tokens"], r["streamed"]) for r in rows] == [
        ("fake-model", 3, 4, False),
        ("fake-model", 5, 6, True),
    ]


def test_wrong_deleted_and_expired_tokens_are_refused(signed_in: Stack) -> None:
    stack = signed_in
    base_url = f"{stack.urls['proxy']}/v1"
    message = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="aq-not-a-real-token").chat.completions.create(
            model="fake-model", messages=message
        )

    doomed = stack.cli("tokens", "create", "--name", "doomed", "--quiet").stdout.strip()
    client = openai.OpenAI(base_url=base_url, api_key=doomed, max_retries=0)
    client.chat.completions.create(model="fake-model", messages=message)
    stack.cli("tokens", "delete", _token_id(stack, "doomed"))
    deadline = time.monotonic() + 1.0
    while True:  # the revocation travels directory -> KV -> proxy; it must arrive within a second
        try:
            client.chat.completions.create(model="fake-model", messages=message)
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401
            body = exc.response.json()
            assert set(body["error"]) >= {"message", "type", "param", "code"}
            break
        assert time.monotonic() < deadline, "a deleted token still works after 1 s"
        time.sleep(0.05)

    expires = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
    short = stack.cli(
        "tokens", "create", "--name", "short", "--expires-at", expires, "--quiet"
    ).stdout.strip()
    short_client = openai.OpenAI(base_url=base_url, api_key=short, max_retries=0)
    short_client.chat.completions.create(model="fake-model", messages=message)
    time.sleep(max(0.0, (datetime.fromisoformat(expires) - datetime.now(UTC)).total_seconds()) + 0.2)
    with pytest.raises(openai.AuthenticationError):
        short_client.chat.completions.create(model="fake-model", messages=message)


def test_malformed_body_gets_openai_400(signed_in: Stack) -> None:
    stack = signed_in
    value = stack.cli("tokens", "create", "--name", "malformed", "--quiet").stdout.strip()
    answer = httpx.post(
        f"{stack.urls['proxy']}/v1/chat/completions",
        headers={"Authorization": f"Bearer {value}", "Content-Type": "application/json"},
        content=b'{"model": "fake-model", "messages": [',
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError):
        openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value).chat.completions.create(
            model="fake-model",
            messages="not a list",  # type: ignore[arg-type]
        )


def _processes_using(data_dir: Path) -> list[int]:
    """Processes whose command line or environment mention the data folder (ours, by construction)."""
    marker = str(data_dir).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes() or marker in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_ctrl_c_leaves_nothing_and_restart_keeps_data(tmp_path: Path, upstream) -> None:
    stack = Stack(tmp_path, write_config(tmp_path / "aqueduct.yaml", upstream.url)).start()
    try:
        stack.login_admin()
        value = stack.cli("tokens", "create", "--name", "durable", "--quiet").stdout.strip()
        client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value)
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "remember me"}], max_tokens=2
        )
        token_id = _token_id(stack, "durable")
        assert len(_usage_rows(stack, token_id, expected=1, timeout=10)) == 1
    finally:
        assert stack.stop() == 0
    assert _processes_using(stack.data_dir) == []

    stack.start()
    try:
        assert "password:" not in "".join(stack.output[-40:])  # shown on the first start only
        stack.login_admin()
        client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value)
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "still here"}], max_tokens=2
        )
        assert len(_usage_rows(stack, token_id, expected=2, timeout=10)) == 2
        assert "default" in stack.cli("orgs", "list").stdout
    finally:
        assert stack.stop() == 0
    assert _processes_using(stack.data_dir) == []
