"""One request on its way through the gateway (``Call``), and the gateway's own settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aqueduct_libs.request_id import current_request_id
from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.adapters.budget_store import BudgetHold
from aqueduct_proxy.adapters.limiter import Admission
from aqueduct_proxy.domain.access import Route
from aqueduct_proxy.domain.snapshot import Endpoint

__all__ = ["Call", "GatewayConfig"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    secret_key: bytes
    public_ui_url: str
    fail_open: bool = True
    retries: int = 2
    retry_backoff: float = 0.2


@dataclass(slots=True)
class Call:
    """One request on its way through the gateway."""

    grant: TokenGrant
    api_path: str  # the public route, e.g. "/v1/chat/completions"
    upstream_path: str  # appended to the endpoint's base URL, e.g. "/chat/completions"
    endpoint: Endpoint
    route: Route | None = None
    payload: dict[str, Any] | None = None  # JSON body
    form: list[tuple[str, Any]] | None = None  # multipart fields, in order
    raw: bytes | None = None  # any other body, forwarded as it came (endpoint routes only)
    stream: bool = False
    client_wants_usage: bool = False
    input_tokens: int = 0  # read through ``counted_input`` once the call was forwarded
    # Counts the input tokens later, when admission did not need them (no input-token limit, no budget):
    # a stream's upstream reports them at its end, and only a stream without that usage needs the count.
    uncounted: Callable[[], int] | None = None
    reserved_output: int = 0
    admission: Admission | None = None
    budget_hold: BudgetHold | None = None  # the worst case reserved on its budgets, until settled
    # The answer's x-request-id (the one of the request being served), carried into the usage event.
    request_id: str | None = field(default_factory=current_request_id)
    # Clients of Anthropic's Messages API: their request as sent, and its path on Anthropic endpoints
    # ("/v1/messages" or "/v1/messages/count_tokens"). ``native`` tells whether the endpoint that answers
    # speaks it too (the answer passes unchanged) or chat completions (``payload`` holds the translation).
    anthropic: dict[str, Any] | None = None
    anthropic_path: str = ""
    native: bool = False
    # A call that costs nothing (counting a prompt's tokens): no budget applies, a used-up one included.
    free: bool = False
    started: float = field(default_factory=time.perf_counter)
    occurred_at: datetime = field(default_factory=_now)

    @property
    def model(self) -> str:
        return self.route.model if self.route else ""

    def counted_input(self) -> int:
        """The request's input tokens as the gateway counts them (counted now if admission left them)."""
        if self.uncounted is not None:
            self.input_tokens, self.uncounted = self.uncounted(), None
        return self.input_tokens
