"""The sign-in RPC's handler, on FastStream's in-memory test broker (no NATS server needed): a known
identity gets its user, an unknown group a refusal, a malformed request an answer too, never a timeout."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from directory_testkit import make_app, make_world
from faststream.nats import NatsBroker, TestNatsBroker

from aqueduct_directory.entrypoints.rpc import DIRECTORY, sign_in_router
from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.rpc import DirectoryUser, SignInRefusal, SignInRequest


@pytest.fixture
async def broker() -> AsyncIterator[tuple[NatsBroker, Any]]:
    app = make_app(None)
    world = make_world(app)
    broker = new_broker(None, "directory-test", (sign_in_router(),))
    broker.context.set_global(DIRECTORY, app)
    async with TestNatsBroker(broker) as test_broker:
        yield test_broker, world
    app.close()


async def _ask(broker: NatsBroker, request: Any) -> dict[str, Any]:
    reply = await broker.request(request, names.DIRECTORY_RPC_SIGN_IN, timeout=5)
    return json.loads(reply.body)


async def test_a_first_sign_in_provisions_the_user_in_the_org_of_its_group(broker) -> None:
    test_broker, world = broker
    request = SignInRequest(subject="oidc:idp:1", email="n@acme.test", name="N", groups=["staff"])
    user = DirectoryUser.model_validate(await _ask(test_broker, request))
    assert (user.org_id, user.email, user.admin, user.teams) == (world.org, "n@acme.test", False, [])
    again = DirectoryUser.model_validate(await _ask(test_broker, request))
    assert again.user_id == user.user_id


async def test_an_identity_of_no_known_group_is_refused(broker) -> None:
    test_broker, _ = broker
    answer = await _ask(test_broker, SignInRequest(subject="oidc:idp:2", groups=["nope"]))
    assert SignInRefusal.model_validate(answer).error


@pytest.mark.parametrize("body", [b"not json", b'{"email": "no subject"}', b'{"subject": ["a list"]}'])
async def test_a_malformed_request_is_answered_with_a_refusal(broker, body: bytes) -> None:
    test_broker, _ = broker
    refusal = SignInRefusal.model_validate(await _ask(test_broker, body))
    assert refusal.code == "invalid_input" and "malformed sign-in request" in refusal.error
