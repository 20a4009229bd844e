"""API tokens on the reports API (accounting), as a notebook or a script would use them.

A plain token reads its owner's own usage only, even when the owner is an Admin; a token created with
management access acts with the owner's roles (ad-hoc SQL for an Admin); an unknown token is refused.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _get(stack: Stack, path: str, token: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{stack.urls['accounting']}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_api_tokens_read_reports_with_the_roles_they_act_with(stack: Stack) -> None:
    stack.login_admin()
    plain = stack.cli("tokens", "create", "--name", "notebook", "--quiet").stdout.strip()
    managing = stack.cli(
        "tokens", "create", "--name", "reports-job", "--management", "--quiet"
    ).stdout.strip()
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=plain, max_retries=0)
    client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )

    deadline = time.monotonic() + 10
    while True:
        answer = _get(stack, "/api/usage/summary", plain, group_by="user")
        assert answer.status_code == 200, answer.text
        groups = answer.json()["groups"]
        if groups or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # The Admin's own usage only, although other users of this stack have used models too.
    me = httpx.get(
        f"{stack.urls['directory']}/api/me", headers={"Authorization": f"Bearer {plain}"}, timeout=10
    ).json()
    assert groups and {g["key"] for g in groups} == {me["id"]}, groups
    everyone = _get(stack, "/api/usage/summary", managing, group_by="user").json()["groups"]
    assert len(everyone) >= len(groups)

    # Ad-hoc SQL is for Admins: the plain token of an Admin acts as a User, the management one as the Admin.
    sql = {"query": "SELECT count() AS n FROM usage_events"}
    as_user = httpx.post(
        f"{stack.urls['accounting']}/api/sql",
        json=sql,
        headers={"Authorization": f"Bearer {plain}"},
        timeout=10,
    )
    assert as_user.status_code == 403
    as_admin = httpx.post(
        f"{stack.urls['accounting']}/api/sql",
        json=sql,
        headers={"Authorization": f"Bearer {managing}"},
        timeout=10,
    )
    assert as_admin.status_code == 200 and as_admin.json()["rows"][0][0] >= 1

    unknown = _get(stack, "/api/usage/summary", "aq-" + "x" * 40)
    assert unknown.status_code == 401 and unknown.json()["code"] == "unauthenticated"
