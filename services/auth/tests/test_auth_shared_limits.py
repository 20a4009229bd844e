"""Sign-in attempt limits hold across auth processes: the windows live in the ``auth_attempts`` bucket.

While the bus is unreachable, each process counts on its own (same policy) rather than refusing everyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import nats
import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, sign_in

from aqueduct_auth.adapters.attempts import SharedAttemptLimiter
from aqueduct_auth.domain.rate_limit import AttemptLimiter, admit
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs.bus import ensure_topology

pytestmark = pytest.mark.nats


def test_the_window_rule() -> None:
    assert admit([], 2, 60, 100.0) == (0, [100.0])
    assert admit([100.0], 2, 60, 110.0) == (0, [100.0, 110.0])
    # Full: refused until the oldest attempt leaves the window, and the refusal is not recorded.
    assert admit([100.0, 110.0], 2, 60, 120.0) == (40, [100.0, 110.0])
    assert admit([100.0, 110.0], 2, 60, 160.5) == (0, [110.0, 160.5])


async def test_failed_attempts_on_one_process_count_on_another(auth_client, tmp_path: Path) -> None:
    limits = {"sign_in_attempts_per_username": 3}
    async with (
        auth_client(data_dir=tmp_path / "a", **limits) as first,
        auth_client(data_dir=tmp_path / "b", keep_attempts=True, **limits) as second,
    ):
        assert (await sign_in(first, ADMIN_USERNAME, "guess")).status_code == 401
        assert (await sign_in(second, ADMIN_USERNAME, "guess")).status_code == 401
        assert (await sign_in(first, ADMIN_USERNAME, "guess")).status_code == 401
        limited = await sign_in(second, ADMIN_USERNAME, ADMIN_PASSWORD)
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert (await sign_in(first, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 429
        # Other usernames keep their own windows.
        assert (await sign_in(second, "someone-else", "guess")).status_code == 401


async def test_concurrent_attempts_on_two_processes_are_counted_exactly(auth_client, tmp_path: Path) -> None:
    limits = {"sign_in_attempts_per_username": 5, "sign_in_attempts_per_ip": 1000}
    async with (
        auth_client(data_dir=tmp_path / "a", **limits) as first,
        auth_client(data_dir=tmp_path / "b", keep_attempts=True, **limits) as second,
    ):
        answers = await asyncio.gather(
            *(sign_in((first, second)[n % 2], "target", f"guess-{n}") for n in range(24))
        )
    codes = sorted(a.status_code for a in answers)
    assert codes.count(401) == 5 and codes.count(429) == 19, codes


async def test_an_unreachable_bus_falls_back_to_this_process_and_logs_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        limiter = SharedAttemptLimiter(js, AttemptLimiter(3, 60), timeout=0.3)
        now = time.time()
        assert await limiter.check("user:bob", now) == 0  # counted in the bucket
        assert not limiter.degraded

        bus.kill()
        with caplog.at_level(logging.WARNING, logger="aqueduct_auth.adapters.attempts"):
            answers = [await limiter.check("user:bob", now + n) for n in range(1, 5)]
        assert limiter.degraded
        assert answers[:3] == [0, 0, 0] and answers[3] > 0  # the same limit, counted here alone
        fallbacks = [r for r in caplog.records if "fall back" in r.getMessage()]
        assert len(fallbacks) == 1

        bus.start()  # same port, same store: back to the shared window, which still holds 1 attempt
        for _ in range(100):
            if nc.is_connected:
                break
            await asyncio.sleep(0.1)
        assert [await limiter.check("user:bob", now + 10 + n) for n in range(3)] == [0, 0, 48]
        assert not limiter.degraded
    finally:
        await nc.close()
        bus.stop()
