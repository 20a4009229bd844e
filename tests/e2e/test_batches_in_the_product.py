"""A batch through the running product: the OpenAI client uploads a JSONL file and creates a batch
against an upstream without a batch API; the launcher's batch worker runs it; the output file has one
answer per line, and ClickHouse has one usage row per line."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LINES = 25


def test_a_batch_runs_and_every_line_is_a_usage_row(stack: Stack) -> None:
    stack.login_admin()
    value = stack.cli("tokens", "create", "--name", "batcher", "--quiet").stdout.strip()
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value)
    jsonl = "".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "fake-model",
                    "messages": [{"role": "user", "content": "word " * (i + 1)}],
                    "max_tokens": 2,
                },
            }
        )
        + "\n"
        for i in range(LINES)
    )
    uploaded = client.files.create(file=("lines.jsonl", io.BytesIO(jsonl.encode())), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None and batch.request_counts.completed == LINES

    assert batch.output_file_id is not None
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == sorted(f"line-{i}" for i in range(LINES))
    assert all(o["response"]["status_code"] == 200 for o in output)

    query = (
        "SELECT count() AS rows, uniqExact(event_id) AS events, sum(input_tokens) AS input "
        f"FROM usage_events WHERE batch_id = '{batch.id}'"
    )
    deadline = time.monotonic() + 10
    while True:
        [row] = json.loads(stack.cli("sql", query, "--format", "json").stdout)
        if int(row["rows"]) >= LINES or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # One row per line, each once; the input tokens are the words the upstream counted (1 + ... + LINES).
    assert (int(row["rows"]), int(row["events"])) == (LINES, LINES)
    assert int(row["input"]) == LINES * (LINES + 1) // 2
