"""When a stream's input tokens are counted: before forwarding where an input-token limit (or a budget)
charges them, otherwise only if the stream ends without the upstream's usage (counters in a real Valkey,
the real tokenizer)."""

from __future__ import annotations

import os

import pytest

from aqueduct_libs import names
from aqueduct_libs.snapshot import EndpointRoute, Limits, ModelRoute, TokenGrant
from aqueduct_proxy.adapters.limiter import Limiter
from aqueduct_proxy.adapters.resp import RespClient
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.adapters.upstream import Cooldown, UpstreamClient
from aqueduct_proxy.application.gateway import Gateway, GatewayConfig
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.metrics import ProxyMetrics

pytestmark = [pytest.mark.valkey]

PAYLOAD = {
    "model": "m",
    "messages": [{"role": "user", "content": "the quick brown fox jumps over the lazy dog"}],
    "max_tokens": 5,
}


@pytest.fixture
async def gateway(valkey_url: str):
    snapshot = Snapshot()
    snapshot.on_snapshot_put(
        names.snapshot_endpoint_key("e"),
        EndpointRoute(slug="e", url="http://127.0.0.1:9/v1").model_dump_json().encode(),
    )
    snapshot.on_snapshot_put(
        names.snapshot_model_key("m"),
        ModelRoute(name="m", endpoint="e", upstream_model="u").model_dump_json().encode(),
    )
    limiter = Limiter.from_url(valkey_url, timeout=2.0)
    gateway = Gateway(
        GatewayConfig(secret_key=b"k" * 32, public_ui_url="http://ui"),
        snapshot,
        UpstreamClient(pool_size=1, timeout=1, connect_timeout=1),
        None,
        limiter,
        TokenCounter(),
        Cooldown(5, 30, 30),
        ProxyMetrics(),
    )
    yield gateway
    await limiter.close()


def _grant(limits: Limits) -> TokenGrant:
    token_id = f"test-{os.urandom(4).hex()}"
    return TokenGrant(token_id=token_id, token_hash="h", name="t", user_id="u", org_id="o", limits=limits)


def _prepare(gateway: Gateway, grant: TokenGrant, **extra: object):
    return gateway.prepare(grant, "/v1/chat/completions", "/chat/completions", payload={**PAYLOAD, **extra})


async def test_without_an_input_limit_a_stream_is_counted_only_when_asked(gateway) -> None:
    expected = TokenCounter().count(PAYLOAD)
    call = _prepare(gateway, _grant(Limits(requests_per_minute=1000)), stream=True)
    assert call.input_tokens == 0 and call.uncounted is not None  # nothing counted on the way upstream
    assert call.counted_input() == expected  # the end of a stream without usage asks for it
    assert call.uncounted is None and call.input_tokens == expected
    assert call.counted_input() == expected


async def test_an_answer_read_whole_keeps_its_count_as_before(gateway) -> None:
    # Not streamed and no limit that needs it: the answer's own usage counts, as it always did.
    call = _prepare(gateway, _grant(Limits()))
    assert call.uncounted is None and call.counted_input() == 0


async def test_an_input_limit_charges_the_counted_stream_before_forwarding(gateway, valkey_url) -> None:
    expected = TokenCounter().count(PAYLOAD)
    grant = _grant(Limits(input_tokens_per_minute=10 * expected))
    call = _prepare(gateway, grant, stream=True)
    assert call.input_tokens == expected and call.uncounted is None  # counted before the charge

    headers = await gateway.admit(call)  # the charge that precedes forwarding

    assert headers["x-ratelimit-remaining-tokens"] == str(9 * expected)
    valkey = RespClient(valkey_url)
    try:
        charged = await valkey.execute("HGET", f"aq:rl:{{{grant.token_id}}}:t:itpm", "t")
    finally:
        await valkey.close()
    assert int(charged) == expected
    gateway.release(call)
