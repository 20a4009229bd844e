"""Admission: a request's input checks (model, the fields the gateway reads, its token count), then its
worst case reserved on its budgets and charged to its per-minute limits, which answer with the
``x-ratelimit-*`` headers or a refusal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from typing import Any

from aqueduct_libs.snapshot import Limits, TokenGrant
from aqueduct_proxy.adapters.limiter import Admission, Counter, Limiter, LimiterDown, Rejection
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.application.call import Call, GatewayConfig
from aqueduct_proxy.domain.access import check_quota, model_allowed, resolve_model
from aqueduct_proxy.domain.errors import (
    BadRequestError,
    ForbiddenError,
    LimiterUnavailableError,
    ModelNotFoundError,
    RateLimitedError,
    RequestTooLargeError,
    shown,
)
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.metrics import ProxyMetrics

__all__ = ["Gatekeeper"]

log = logging.getLogger(__name__)

_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# The fields the gateway itself reads (to count tokens); the upstream validates everything else.
_REQUIRED_FIELDS: dict[str, tuple[str, tuple[type, ...], str]] = {
    "/chat/completions": ("messages", (list,), "'messages' must be a non-empty array of message objects."),
    "/completions": ("prompt", (str, list), "'prompt' must be a string or an array."),
    "/embeddings": ("input", (str, list), "'input' must be a string or an array."),
}


def _shape_problem(upstream_path: str, payload: dict[str, Any]) -> tuple[str, str] | None:
    rule = _REQUIRED_FIELDS.get(upstream_path)
    if rule is None:
        return None
    field, kinds, message = rule
    value = payload.get(field)
    if not isinstance(value, kinds) or (isinstance(value, list) and not value):
        return field, message
    if field == "messages" and isinstance(value, list) and not all(isinstance(m, dict) for m in value):
        return field, message
    return None


_ERROR_TYPE = {"requests": "requests", "input_tokens": "tokens", "output_tokens": "tokens"}
_HEADER_DIMENSION = {"requests": "requests", "input_tokens": "tokens", "output_tokens": "output-tokens"}
# Per dimension: the names of its limit and remaining headers.
_HEADER_NAMES = {
    dimension: (f"x-ratelimit-limit-{name}", f"x-ratelimit-remaining-{name}")
    for dimension, name in _HEADER_DIMENSION.items()
}
# A call's counters before their costs (a request's, cost 1, whole; the others as key, dimension,
# limit, model), and whether one limits input tokens.
_Shape = tuple[tuple[Counter | tuple[str, str, int, str | None], ...], bool]
_SHAPES = 10_000  # token and model pairs whose shape ``Gatekeeper`` remembers, at most

# Far from its limits, a call's check travels beside its upstream call (``Gatekeeper.admit_ahead``). Far
# is judged on this replica's latest answer for each counter, no older than ``_AHEAD_FRESH`` seconds:
# after the call, at least a tenth of the limit and ``_AHEAD_CALLS`` times the call's own cost must be
# left. For that answer to be wrong, other replicas must have spent all that in the meantime: then
# the check refuses, the upstream call is dropped (its connection closed) and the client gets the
# refusal, as always. The check itself is the same script: the limits stay exact.
_AHEAD_FRESH = 1.0
_AHEAD_SHARE = 10
_AHEAD_CALLS = 1000
_SEEN = 100_000  # counters whose latest answer ``Gatekeeper`` remembers, at most
# A call checked ahead (far from its limits) is charged ``_CREDIT_CALLS`` more calls of its own cost on
# each counter in the same script: this replica's credit, which the next calls of the same counters
# take from without asking Valkey, for ``_CREDIT_SECONDS``; what is left then is given back (the settle
# script, at the second it was charged). Every call admitted is covered by a charge Valkey accepted,
# so limits stay exact (never more than the limit); what a replica holds unused, at most that many
# calls' worth taken while the limit was far, counts as used for the others until it is given back.
_CREDIT_CALLS = 20
_CREDIT_SECONDS = 1.0
_CREDITS = 10_000  # credits held at most (token and model pairs)


class Gatekeeper:
    def __init__(
        self,
        config: GatewayConfig,
        snapshot: Snapshot,
        limiter: Limiter | None,
        counter: TokenCounter,
        budgeting: Budgeting,
        metrics: ProxyMetrics,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.limiter = limiter
        self.counter = counter
        self.budgeting = budgeting
        self.metrics = metrics
        # (token id, model when it has limits of its own) -> the grant's limits, the model's, the shape
        self._shapes: dict[tuple[str, str | None], tuple[Limits, Limits | None, _Shape]] = {}
        # counter key -> its window's total in Valkey's latest answer here, and when (monotonic)
        self._seen: dict[str, tuple[int, float]] = {}
        self._credits = _Credits(limiter)

    def prepare(
        self,
        grant: TokenGrant,
        api_path: str,
        upstream_path: str,
        *,
        payload: dict[str, Any] | None = None,
        form: list[tuple[str, Any]] | None = None,
        raw: bytes | None = None,
        slug: str | None = None,
        model_required: bool = True,
    ) -> Call:
        model: Any = None
        if payload is not None:
            model = payload.get("model")
        elif form is not None:
            model = next((v for k, v in form if k == "model" and isinstance(v, str)), None)
        if model is None and not model_required and slug is not None:
            endpoint = self.snapshot.endpoints.get(slug)
            if endpoint is None:
                raise ModelNotFoundError(f"The endpoint '{shown(slug)}' does not exist.")
            if grant.allowed_models is not None and not any(
                m.endpoint == slug and model_allowed(grant, m.name) for m in self.snapshot.models.values()
            ):
                raise ForbiddenError(f"This API key may not use any model of the endpoint '{slug}'.")
            return Call(grant, api_path, upstream_path, endpoint, payload=payload, form=form, raw=raw)
        if not isinstance(model, str) or not model:
            raise BadRequestError("You must provide a model parameter.", param="model")
        if payload is not None and (problem := _shape_problem(upstream_path, payload)):
            raise BadRequestError(problem[1], param=problem[0])
        route = resolve_model(grant, self.snapshot, model, slug)
        call = Call(grant, api_path, upstream_path, route.endpoint, route=route, payload=payload, form=form)
        if payload is not None:
            call.stream = payload.get("stream") is True
            options = payload.get("stream_options")
            call.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
            cap = next((payload[k] for k in _OUTPUT_CAPS if isinstance(payload.get(k), int)), 0)
            call.reserved_output = max(0, cap)
            if (self.limiter is not None and self._limits_input(call)) or self.budgeting.applies(call):
                call.input_tokens = self.counter.count(payload)  # charged and reserved before forwarding
            elif call.stream:
                # Needed only if the stream ends without the upstream's usage (cut short, or an upstream
                # that ignores include_usage): not counted on the way to the first chunk.
                call.uncounted = partial(self.counter.count, payload)
        return call

    # -- limits ----------------------------------------------------------------------------------------

    def _limit_sets(self, call: Call) -> list[tuple[str, Limits]]:
        sets = [("t", call.grant.limits)]
        if call.route is not None and call.route.model_limits is not None:
            sets.append((f"m:{call.route.model}", call.route.model_limits))
        return sets

    def _limits_input(self, call: Call) -> bool:
        return self._shape(call)[1]

    def _shape(self, call: Call) -> _Shape:
        """The call's counters but for their costs, worked out once per token and model: the same
        grant's limits (the very objects: a changed grant brings new ones) give the same counters."""
        grant, route = call.grant, call.route
        model_limits = model = None
        if route is not None and route.model_limits is not None:
            model_limits, model = route.model_limits, route.model
        key = (grant.token_id, model)
        found = self._shapes.get(key)
        if found is not None and found[0] is grant.limits and found[1] is model_limits:
            return found[2]
        # One hash tag per token keeps all of a request's counters in one cluster slot (one Lua script).
        prefix = f"aq:rl:{{{grant.token_id}}}"
        counters: list[Counter | tuple[str, str, int, str | None]] = []
        for scope, limits in self._limit_sets(call):
            scope_model = scope[2:] if scope.startswith("m:") else None
            if limits.requests_per_minute is not None:
                counters.append(
                    Counter(f"{prefix}:{scope}:rpm", "requests", limits.requests_per_minute, 1, scope_model)
                )
            if limits.input_tokens_per_minute is not None:
                counters.append(
                    (f"{prefix}:{scope}:itpm", "input_tokens", limits.input_tokens_per_minute, scope_model)
                )
            if limits.output_tokens_per_minute is not None:
                counters.append(
                    (f"{prefix}:{scope}:otpm", "output_tokens", limits.output_tokens_per_minute, scope_model)
                )
        shape = (tuple(counters), any(isinstance(c, tuple) and c[1] == "input_tokens" for c in counters))
        if len(self._shapes) >= _SHAPES:
            self._shapes.clear()
        self._shapes[key] = (grant.limits, model_limits, shape)
        return shape

    def _counters(self, call: Call) -> list[Counter]:
        counters = []
        for counter in self._shape(call)[0]:
            if isinstance(counter, Counter):  # a request: its cost is always 1
                counters.append(counter)
            else:
                key, dimension, limit, model = counter
                cost = call.input_tokens if dimension == "input_tokens" else call.reserved_output
                counters.append(Counter(key, dimension, limit, cost, model))
        return counters

    async def admit(self, call: Call) -> dict[str, str]:
        """Reserve the request's worst-case cost on its budgets (or BudgetExhaustedError), then charge
        its limits: the answer's ``x-ratelimit-*`` headers, or RateLimitedError. Whoever admits a call
        must end it with ``record``, ``finish``, ``settle`` or ``release`` (``usage.UsageRecorder``)."""
        if not call.free:
            check_quota(call.grant, self.snapshot)  # accounting's decision: a budget is used up
        # The budget reservation is sent first and travels with the limits' check (one wait for both).
        reservation = self.budgeting.begin(call)
        counters = self._counters(call) if self.limiter is not None else []
        if not counters:
            if reservation is not None and not self.budgeting.admitted(call, reservation):
                await self.budgeting.complete(call, reservation)
            return {}
        if reservation is None and (credited := self._credits.take(counters)) is not None:
            call.admission = credited
            return _admission_headers(credited)
        try:
            admission = await self._charge(counters)
        except BaseException:
            if reservation is not None and reservation.id:
                with contextlib.suppress(Exception):  # the refusal that counts is the limit's
                    await self.budgeting.complete(call, reservation)
                self.budgeting.settle(call, None)  # released: no usage will come
            raise
        if reservation is not None and not self.budgeting.admitted(call, reservation):
            try:
                await self.budgeting.complete(call, reservation)
            except BaseException:
                if admission is not None and self.limiter is not None:
                    await self.limiter.settle(admission, 0)  # no output will come
                raise
        if admission is None:
            return {}
        call.admission = admission
        return _admission_headers(admission)

    async def drain(self) -> None:
        """Give back what is left of every credit (at a stop)."""
        await self._credits.drain()

    def admit_ahead(self, call: Call) -> asyncio.Task[dict[str, str]] | None:
        """``admit`` under way in a task of its own, for a call that may go upstream before its answer:
        no budget of it is reserved in Valkey, and each of its limits is far from refusing it
        (``_AHEAD_SHARE``). None: ``admit`` must be awaited first. The task's result is ``admit``'s (the
        limit headers; ``call.admission`` set), or its refusal."""
        limiter = self.limiter
        if limiter is None or limiter.resting or self.budgeting.applies(call):
            return None
        counters = self._counters(call)
        if not counters or self._credits.covers(counters) or not self._far(counters):
            return None  # (what a credit covers, ``admit`` takes from it at once)
        if not call.free:
            check_quota(call.grant, self.snapshot)
        task = asyncio.get_running_loop().create_task(self._admit_counters(call, counters))
        task.add_done_callback(_retrieved)  # read, whoever waits for it or not (a client gone)
        return task

    def _far(self, counters: list[Counter]) -> bool:
        now = time.monotonic()
        for counter in counters:
            seen = self._seen.get(counter.key)
            if seen is None or now - seen[1] > _AHEAD_FRESH:
                return False
            left = counter.limit - seen[0] - counter.cost
            if left < counter.limit // _AHEAD_SHARE or left < _AHEAD_CALLS * max(counter.cost, 1):
                return False
        return True

    async def _admit_counters(self, call: Call, counters: list[Counter]) -> dict[str, str]:
        """Charge the call and a credit of ``_CREDIT_CALLS`` more like it; if that does not fit (the
        limit was nearer than this replica knew), the call alone. While one call asks for its
        counters' credit, the others charge themselves alone (concurrent calls would each take one, and
        give it back when the next replaced it)."""
        if not self._credits.ask(counters):
            return await self._admit_alone(call, counters)
        try:
            return await self._admit_with_credit(call, counters)
        finally:
            self._credits.asked(counters)

    async def _admit_alone(self, call: Call, counters: list[Counter]) -> dict[str, str]:
        admission = await self._charge(counters)
        if admission is None:
            return {}
        call.admission = admission
        return _admission_headers(admission)

    async def _admit_with_credit(self, call: Call, counters: list[Counter]) -> dict[str, str]:
        extra = _CREDIT_CALLS
        with_credit = [Counter(c.key, c.dimension, c.limit, c.cost * (1 + extra), c.model) for c in counters]
        try:
            charged = await self._charge(with_credit, count_refusal=False)
        except RateLimitedError:
            charged = None
            admission = await self._charge(counters)
        else:
            admission = charged
        if admission is None:
            return {}
        if charged is not None:
            left = [c.cost * extra for c in counters]
            self._credits.put(counters, charged.used, charged.second, left)
            admission = Admission(
                counters, [u - n for u, n in zip(charged.used, left, strict=True)], charged.second
            )
        call.admission = admission
        return _admission_headers(admission)

    async def admit_requests(self, grant: TokenGrant, count: int = 1) -> dict[str, str]:
        """Charge ``count`` requests to the token's requests-per-minute counter only, all or none: for
        calls that spend no model tokens (MCP tool calls), on the counter its model requests use."""
        limit = grant.limits.requests_per_minute
        if self.limiter is None or limit is None or count < 1:
            return {}
        counter = Counter(f"aq:rl:{{{grant.token_id}}}:t:rpm", "requests", limit, count)
        admission = await self._charge([counter])
        return {} if admission is None else _admission_headers(admission)

    async def _charge(self, counters: list[Counter], count_refusal: bool = True) -> Admission | None:
        """The admission, None when the limiter is down and limits fail open, or RateLimitedError
        (``count_refusal``: in the refusals metric)."""
        assert self.limiter is not None
        for counter in counters:
            if counter.cost > counter.limit:
                raise RequestTooLargeError(
                    _too_large_message(counter),
                    type=_ERROR_TYPE[counter.dimension],
                    headers={"x-should-retry": "false"},
                )
        try:
            result = await self.limiter.admit(counters)
        except LimiterDown as exc:
            self.metrics.limiter_failures.inc()
            if self.config.fail_open:
                return None
            raise LimiterUnavailableError(
                "Rate limits cannot be checked right now; try again shortly."
            ) from exc
        seen = self._seen
        if len(seen) >= _SEEN:
            seen.clear()
        now = time.monotonic()
        if isinstance(result, Rejection):
            seen[result.counter.key] = (result.counter.limit, now)
            if count_refusal:
                self.metrics.limit_rejections.labels(result.counter.dimension).inc()
            raise RateLimitedError(
                _rejection_message(result),
                type=_ERROR_TYPE[result.counter.dimension],
                headers=_rejection_headers(result),
            )
        for counter, used in zip(result.counters, result.used, strict=True):
            seen[counter.key] = (used, now)
        return result


class _Credits:
    """Per set of counters (keys and limits), what this replica was charged ahead and has not used."""

    def __init__(self, limiter: Limiter | None) -> None:
        self._limiter = limiter
        self._held: dict[tuple[tuple[str, int], ...], _Credit] = {}
        self._asking: set[tuple[tuple[str, int], ...]] = set()  # a credit asked for, not answered yet
        self._giving_back: set[asyncio.Task[None]] = set()

    @staticmethod
    def _key(counters: list[Counter]) -> tuple[tuple[str, int], ...]:
        return tuple((c.key, c.limit) for c in counters)

    def ask(self, counters: list[Counter]) -> bool:
        """Whether this call may ask for its counters' credit (no other call is asking now)."""
        key = self._key(counters)
        if key in self._asking or len(self._asking) >= _CREDITS:
            return False
        self._asking.add(key)
        return True

    def asked(self, counters: list[Counter]) -> None:
        self._asking.discard(self._key(counters))

    def covers(self, counters: list[Counter]) -> bool:
        credit = self._held.get(self._key(counters))
        return credit is not None and credit.covers(counters)

    def take(self, counters: list[Counter]) -> Admission | None:
        """The call's admission out of its counters' credit, or None (none, or not enough: given back)."""
        key = self._key(counters)
        credit = self._held.get(key)
        if credit is None:
            return None
        if not credit.covers(counters):
            self._end(key, credit)
            return None
        left = credit.left
        for i, counter in enumerate(counters):
            left[i] -= counter.cost
        return Admission(counters, [u - n for u, n in zip(credit.used, left, strict=True)], credit.second)

    def put(self, counters: list[Counter], used: list[int], second: int, left: list[int]) -> None:
        key = self._key(counters)
        if (previous := self._held.get(key)) is not None:
            self._end(key, previous)
        if len(self._held) >= _CREDITS:
            for old_key, old in list(self._held.items()):
                self._end(old_key, old)
        credit = _Credit(counters, list(used), second, left, time.monotonic() + _CREDIT_SECONDS)
        self._held[key] = credit
        credit.timer = asyncio.get_running_loop().call_later(_CREDIT_SECONDS, self._end, key, credit)

    def _end(self, key: tuple[tuple[str, int], ...], credit: _Credit) -> None:
        """No more calls from this credit: what is left of it goes back to Valkey."""
        if self._held.get(key) is credit:
            del self._held[key]
        if credit.timer is not None:
            credit.timer.cancel()
            credit.timer = None
        if self._limiter is None or credit.given_back:
            return
        credit.given_back = True
        unused = [(c, n) for c, n in zip(credit.counters, credit.left, strict=True) if n > 0]
        if not unused:
            return
        task = asyncio.get_running_loop().create_task(
            self._limiter.give_back([c for c, _ in unused], credit.second, [n for _, n in unused])
        )
        self._giving_back.add(task)
        task.add_done_callback(self._gave_back)

    async def drain(self) -> None:
        for key, credit in list(self._held.items()):
            self._end(key, credit)
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)

    def _gave_back(self, task: asyncio.Task[None]) -> None:
        self._giving_back.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("an unused rate-limit credit was not given back: %s", exc)


class _Credit:
    __slots__ = ("counters", "given_back", "left", "second", "timer", "until", "used")

    def __init__(self, counters: list[Counter], used: list[int], second: int, left: list[int], until: float):
        self.counters = counters
        self.used = used  # the counters' window totals when it was charged (the credit included)
        self.second = second
        self.left = left
        self.until = until
        self.timer: asyncio.TimerHandle | None = None
        self.given_back = False

    def covers(self, counters: list[Counter]) -> bool:
        if time.monotonic() >= self.until:
            return False
        return all(c.cost <= n for c, n in zip(counters, self.left, strict=True))


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _admission_headers(admission: Admission) -> dict[str, str]:
    """``x-ratelimit-limit-*`` and ``-remaining-*``: per dimension, the counter with the least left."""
    least: dict[str, tuple[int, int]] = {}  # dimension -> limit, remaining (in the counters' order)
    for counter, used in zip(admission.counters, admission.used, strict=True):
        remaining = counter.limit - used
        if remaining < 0:
            remaining = 0
        previous = least.get(counter.dimension)
        if previous is None or remaining < previous[1]:
            least[counter.dimension] = (counter.limit, remaining)
    headers: dict[str, str] = {}
    for dimension, (limit, remaining) in least.items():
        limit_name, remaining_name = _HEADER_NAMES[dimension]
        headers[limit_name] = str(limit)
        headers[remaining_name] = str(remaining)
    return headers


def _rejection_message(rejection: Rejection) -> str:
    counter = rejection.counter
    what = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}
    of_model = f" for the model '{shown(counter.model)}'" if counter.model else ""
    return (
        f"Rate limit reached{of_model}: {counter.limit} {what[counter.dimension]} per minute "
        f"(used {rejection.used}). Please try again in {rejection.retry_after}s."
    )


def _too_large_message(counter: Counter) -> str:
    what = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}
    of_model = f" of the model '{shown(counter.model)}'" if counter.model else ""
    return (
        f"Request too large: {what[counter.dimension]} per minute{of_model}: Limit {counter.limit}, "
        f"Requested {counter.cost}. Send a smaller request (fewer input tokens or a lower max_tokens)."
    )


def _rejection_headers(rejection: Rejection) -> dict[str, str]:
    counter = rejection.counter
    name = _HEADER_DIMENSION[counter.dimension]
    return {
        "Retry-After": str(rejection.retry_after),
        f"x-ratelimit-limit-{name}": str(counter.limit),
        f"x-ratelimit-remaining-{name}": str(max(0, counter.limit - rejection.used)),
        f"x-ratelimit-reset-{name}": f"{rejection.retry_after}s",
    }
