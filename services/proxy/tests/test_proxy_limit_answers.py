"""What a refusal for a per-minute limit says: the dimension as OpenAI names it, and whether a retry can
ever pass (counters in a real Valkey)."""

from __future__ import annotations

import os

import pytest

from aqueduct_proxy.adapters.limiter import Counter, Limiter
from aqueduct_proxy.adapters.upstream import Cooldown, UpstreamClient
from aqueduct_proxy.application.gateway import Gateway, GatewayConfig
from aqueduct_proxy.domain.errors import RateLimitedError, RequestTooLargeError
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.metrics import ProxyMetrics

pytestmark = [pytest.mark.valkey]


@pytest.fixture
async def gateway(valkey_url: str):
    limiter = Limiter.from_url(valkey_url, timeout=2.0)
    gateway = Gateway(
        GatewayConfig(secret_key=b"k" * 32, public_ui_url="http://ui"),
        Snapshot(),
        UpstreamClient(pool_size=1, timeout=1, connect_timeout=1),
        None,
        limiter,
        None,  # type: ignore[arg-type]
        Cooldown(5, 30, 30),
        ProxyMetrics(),
    )
    yield gateway
    await limiter.close()


def _key(kind: str) -> str:
    return f"aq:rl:{{test-{os.urandom(4).hex()}}}:t:{kind}"


async def test_a_request_larger_than_the_limit_is_told_so_without_retry_after(gateway) -> None:
    with pytest.raises(RequestTooLargeError) as refused:
        await gateway.gatekeeper._charge([Counter(_key("itpm"), "input_tokens", 100, 250)])
    error = refused.value
    assert (error.status, error.type, error.code) == (429, "tokens", "rate_limit_exceeded")
    assert "Request too large" in error.message and "Limit 100, Requested 250" in error.message
    assert "Retry-After" not in error.headers and error.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("dimension", "kind", "expected"),
    [
        ("requests", "rpm", "requests"),
        ("input_tokens", "itpm", "tokens"),
        ("output_tokens", "otpm", "tokens"),
    ],
)
async def test_a_used_up_limit_names_its_dimension_and_when_to_retry(
    gateway, dimension, kind, expected
) -> None:
    key = _key(kind)
    cost = 1 if dimension == "requests" else 6
    await gateway.gatekeeper._charge([Counter(key, dimension, cost, cost)])
    with pytest.raises(RateLimitedError) as refused:
        await gateway.gatekeeper._charge([Counter(key, dimension, cost, cost)])
    error = refused.value
    assert not isinstance(error, RequestTooLargeError)
    assert (error.status, error.type, error.code) == (429, expected, "rate_limit_exceeded")
    assert 0 < int(error.headers["Retry-After"]) <= 60


async def test_a_models_own_limit_says_it_is_that_models(gateway) -> None:
    """A limit set for one model (``model_limits``) names the model; the token's own limits do not."""
    key = f"aq:rl:{{test-{os.urandom(4).hex()}}}:m:gpt-4o:rpm"
    await gateway.gatekeeper._charge([Counter(key, "requests", 1, 1, "gpt-4o")])
    with pytest.raises(RateLimitedError) as refused:
        await gateway.gatekeeper._charge([Counter(key, "requests", 1, 1, "gpt-4o")])
    assert refused.value.message.startswith(
        "Rate limit reached for the model 'gpt-4o': 1 requests per minute (used 1)."
    ), refused.value.message
    with pytest.raises(RequestTooLargeError) as too_large:
        await gateway.gatekeeper._charge([Counter(key + "-i", "input_tokens", 10, 20, "gpt-4o")])
    assert "input tokens per minute of the model 'gpt-4o': Limit 10" in too_large.value.message
    own = _key("rpm")
    await gateway.gatekeeper._charge([Counter(own, "requests", 1, 1)])
    with pytest.raises(RateLimitedError) as refused:
        await gateway.gatekeeper._charge([Counter(own, "requests", 1, 1)])
    assert refused.value.message.startswith("Rate limit reached: 1 requests per minute"), (
        refused.value.message
    )
