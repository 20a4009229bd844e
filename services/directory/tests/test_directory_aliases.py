"""Model aliases, token-class prices and the endpoint's Responses API setting, as stories: each is its
own stored event, checked before it is recorded, replayed after a restart and projected for the proxy."""

from __future__ import annotations

import pytest
from directory_testkit import Clock, make_app, make_world

from aqueduct_directory.adapters.projection import compute_snapshot
from aqueduct_directory.domain.errors import ConflictError, InvalidInputError
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_libs import names
from aqueduct_libs.snapshot import EndpointRoute, ModelRoute


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(tmp_path, clock):
    return make_world(make_app(tmp_path, clock))


def _route(app, name: str) -> ModelRoute:
    return ModelRoute.model_validate_json(compute_snapshot(app.state)[names.snapshot_model_key(name)])


def test_aliases_are_checked_stored_replayed_and_projected(world, tmp_path, clock):
    app = world.app
    app.register_endpoint(SYSTEM, "vllm", "http://vllm:8000/v1", responses=False)
    app.register_model(SYSTEM, "qwen", "vllm", aliases=["claude-sonnet-4-5", "gpt-5-codex"])
    app.register_model(SYSTEM, "llama", "vllm")
    assert app.list_models(SYSTEM)[1]["aliases"] == ["claude-sonnet-4-5", "gpt-5-codex"]
    events = world.events()

    for taken in (["qwen"], ["gpt-5-codex"]):  # another model's name, or its alias
        with pytest.raises(ConflictError) as err:
            app.update_model(SYSTEM, "llama", aliases=taken)
        assert err.value.code == "alias_taken"
    for bad in ([""], ["has space"], ["x" * 201], ["ok", 3], "not-a-list"):
        with pytest.raises(InvalidInputError):
            app.update_model(SYSTEM, "llama", aliases=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        app.update_model(SYSTEM, "qwen", aliases=["qwen"])
    with pytest.raises(ConflictError):  # a new model may not take an alias's name either
        app.register_model(SYSTEM, "claude-sonnet-4-5", "vllm")
    assert world.events() == events  # nothing refused was recorded

    app.update_model(SYSTEM, "qwen", aliases=["claude-sonnet-4-5"])  # gpt-5-codex is free again
    app.update_model(SYSTEM, "llama", aliases=["gpt-5-codex", "gpt-5-codex"])
    last = list(app.iter_events())[-1][1]
    assert type(last).__name__ == "ModelAliasesSet" and last.names == ["gpt-5-codex"]

    reopened = make_app(tmp_path, clock)
    assert [m["aliases"] for m in reopened.list_models(SYSTEM)] == [["gpt-5-codex"], ["claude-sonnet-4-5"]]
    assert _route(reopened, "qwen").aliases == ["claude-sonnet-4-5"]
    endpoint = EndpointRoute.model_validate_json(
        compute_snapshot(reopened.state)[names.snapshot_endpoint_key("vllm")]
    )
    assert endpoint.responses is False


def test_token_class_prices_and_the_responses_setting(world):
    app = world.app
    app.register_endpoint(SYSTEM, "claude", "https://api.anthropic.com", "anthropic")
    assert app.list_endpoints()[0]["responses"] is True  # the default
    app.register_model(
        SYSTEM, "sonnet", "claude", input_price_per_million=3, output_price_per_million=15,
        cached_input_price_per_million="0.30", cache_write_price_per_million=3.75,
        cache_write_1h_price_per_million=6,
    )  # fmt: skip
    route = _route(app, "sonnet")
    assert (route.input_price_nanos_per_token, route.cached_input_price_nanos_per_token) == (3000, 300)
    assert (route.cache_write_price_nanos_per_token, route.cache_write_1h_price_nanos_per_token) == (
        3750,
        6000,
    )
    assert route.reasoning_price_nanos_per_token is None
    with pytest.raises(InvalidInputError):
        app.update_model(SYSTEM, "sonnet", reasoning_price_per_million=-1)
    # A price not given is left; None removes one.
    app.update_model(SYSTEM, "sonnet", cache_write_1h_price_per_million=None, reasoning_price_per_million=20)
    model = app.list_models(SYSTEM)[0]
    assert (model["cached_input_price_per_million"], model["cache_write_1h_price_per_million"]) == (
        "0.30",
        None,
    )
    assert model["reasoning_price_per_million"] == "20"
    app.update_endpoint(SYSTEM, "claude", responses=False)
    with pytest.raises(InvalidInputError):
        app.update_endpoint(SYSTEM, "claude", responses="no")  # type: ignore[arg-type]
    assert app.list_endpoints()[0]["responses"] is False
