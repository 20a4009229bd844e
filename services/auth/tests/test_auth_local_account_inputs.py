"""An Admin's new local account is checked by the server: a bad value is a 422 naming the field, and no
account is created (the same username with good values is then created, not refused as existing)."""

from __future__ import annotations

from typing import Any

import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, sign_in

pytestmark = pytest.mark.nats

GOOD = {"username": "fiona", "password": "fiona-password", "email": "fiona@example.org", "name": "Fiona"}

BAD: list[tuple[dict[str, Any], str]] = [
    ({"username": "Bad User!"}, "username"),
    ({"username": ""}, "username"),
    ({"username": "x" * 65}, "username"),
    ({"password": "short"}, "password"),
    ({"password": "p" * 1001}, "password"),
    ({"email": "not-an-email"}, "email"),
    ({"email": "two words@example.org"}, "email"),
    ({"name": "bell\x07"}, "name"),
    ({"name": "n" * 201}, "name"),
    ({"groups": ["staff\x00"]}, "groups"),
    ({"groups": [""]}, "groups"),
    ({"groups": "staff"}, "groups"),
]


async def test_each_bad_value_of_a_new_local_account_is_a_422_naming_the_field(auth_client) -> None:
    async with auth_client() as client:
        admin = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()["access_token"]
        as_admin = {"Authorization": f"Bearer {admin}"}
        for change, field in BAD:
            answer = await client.post("/auth/local-users", json={**GOOD, **change}, headers=as_admin)
            assert answer.status_code == 422, (change, answer.text)
            assert answer.json()["field"] == field, (change, answer.json())
            assert field in answer.json()["detail"]
        created = await client.post("/auth/local-users", json=GOOD, headers=as_admin)
        assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/auth/local-users"),
        ("POST", "/auth/local-users"),
        ("POST", "/auth/local-users/fiona/reset-password"),
        ("POST", "/auth/keys/rotate"),
    ],
)
async def test_an_api_token_on_an_admin_route_is_told_to_sign_in(auth_client, method: str, path: str) -> None:
    """An Admin's automation with an API token (AQUEDUCT_TOKEN=aq-...) learns that these routes need a
    session, not "invalid session token: Not enough segments"."""
    async with auth_client() as client:
        answer = await client.request(
            method, path, json=GOOD, headers={"Authorization": "Bearer aq-9qTtloQ3ZX3XmbtQ0HLRGfISyjD1jZj9qQ"}
        )
    assert answer.status_code == 401, answer.text
    problem = answer.json()
    assert problem["code"] == "not_signed_in"
    assert "API token" in problem["detail"] and "aqueduct login" in problem["detail"]
    assert "segments" not in problem["detail"]
