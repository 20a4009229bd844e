"""Prometheus metrics of the data plane, in a registry of its own (one per process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ProxyMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aqueduct_proxy_requests", "Requests answered", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "aqueduct_proxy_request_seconds",
            "Time to the whole answer",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "aqueduct_proxy_time_to_first_token_seconds",
            "Time to the first streamed chunk",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "aqueduct_proxy_upstream_errors", "Failed upstream attempts", ["endpoint", "kind"], registry=r
        )
        self.tokens = Counter("aqueduct_proxy_tokens", "Tokens served", ["model", "direction"], registry=r)
        self.limit_rejections = Counter(
            "aqueduct_proxy_limit_rejections", "Requests refused by a limit", ["dimension"], registry=r
        )
        self.budget_refusals = Counter(
            "aqueduct_proxy_budget_refusals",
            "Requests refused at admission by a budget",
            ["scope", "period"],
            registry=r,
        )
        self.limiter_failures = Counter(
            "aqueduct_proxy_limiter_failures", "Checks skipped or refused: Valkey unreachable", registry=r
        )
        self.usage_buffered = Gauge(
            "aqueduct_proxy_usage_events_buffered", "Usage events waiting for the bus", registry=r
        )
        self.usage_published = Counter(
            "aqueduct_proxy_usage_events_published", "Usage events acknowledged by JetStream", registry=r
        )
        # Label lookups cost more than the increments; the hot path reuses the children.
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._token_children: dict[str, tuple[Any, Any]] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        children = self._request_children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._request_children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        children = self._token_children.get(model)
        if children is None:
            children = (self.tokens.labels(model, "input"), self.tokens.labels(model, "output"))
            self._token_children[model] = children
        children[0].inc(input_tokens)
        children[1].inc(output_tokens)
