"""Every route under every rule, against the product as ``aqueduct up`` starts it.

The table's rows are ``routes.ROUTES``, its columns ``rules.RULES``; a cell that does not apply is
declared in ``rules.NOT_APPLICABLE`` with its reason. Any other cell that does not answer as the rule
says fails the run, and the table is printed at the end (``report``).
"""

from __future__ import annotations

import json
import time
import traceback
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest

from tests.conformance import report
from tests.conformance.routes import OPERATIONAL, ROUTES, Call, Row
from tests.conformance.rules import RULES, Cell, NotApplicableHere, applies, expect_error, expect_ok
from tests.conformance.world import World

pytestmark = [pytest.mark.conformance, pytest.mark.e2e, pytest.mark.slow]


def _proxy_routes() -> set[tuple[str, str]]:
    """The proxy's own route table, built as its ``serve`` builds it (no bus needed to build it)."""
    from aiohttp import web

    from aqueduct_libs.broker import new_broker
    from aqueduct_libs.settings import CommonSettings
    from aqueduct_proxy.adapters.upstream import Cooldown, UpstreamClient
    from aqueduct_proxy.application.gateway import Gateway, GatewayConfig
    from aqueduct_proxy.bootstrap import Proxy
    from aqueduct_proxy.domain.snapshot import Snapshot
    from aqueduct_proxy.entrypoints.http import build_app
    from aqueduct_proxy.features import features
    from aqueduct_proxy.jupyterhub import HubBridgeSettings, JupyterHubFeature
    from aqueduct_proxy.metrics import ProxyMetrics

    gateway = Gateway(
        GatewayConfig(secret_key=b"k" * 32, public_ui_url="http://ui"),
        Snapshot(),
        UpstreamClient(pool_size=1, timeout=1, connect_timeout=1),
        None,
        None,
        None,  # type: ignore[arg-type]
        Cooldown(1, 1, 1),
        ProxyMetrics(),
    )
    bus = SimpleNamespace(jetstream=lambda: SimpleNamespace())
    # A broker never connected: the features only declare their publishers on it.
    broker = new_broker("nats://127.0.0.1:1", "aqueduct-proxy")
    proxy = Proxy(app=build_app(gateway, lambda: True, 1024), gateway=gateway, nc=bus, broker=broker)  # type: ignore[arg-type]
    hub = JupyterHubFeature(HubBridgeSettings(enabled=True), "http://auth")
    proxy.wire([hub if f.name == hub.name else f for f in features(CommonSettings(dev_mode=True))])
    found = set()
    for route in proxy.app.router.routes():
        if route.method == "HEAD" or not isinstance(route.resource, web.AbstractResource):
            continue
        found.add((route.method, route.resource.canonical))
    return found


def test_every_proxy_route_has_a_row() -> None:
    """A route added to the proxy without a row in the table (or an operational reason) fails here."""
    served = {row.serves for row in ROUTES} | set(OPERATIONAL)
    missing = sorted(_proxy_routes() - served)
    assert not missing, f"proxy routes without a conformance row: {missing}"
    stale = sorted(served - _proxy_routes())
    assert not stale, f"conformance rows for routes the proxy does not have: {stale}"


def _maker(world: World, http: httpx.Client) -> Any:
    clients: dict[tuple[str | None, str, str], openai.OpenAI] = {}

    def make(token: str | None, row: Row, **overrides: Any) -> Call:
        headers = overrides.pop("headers", {})
        key = (token, row.base_path, json.dumps(headers, sort_keys=True))
        if key not in clients:
            clients[key] = openai.OpenAI(
                base_url=world.urls["proxy"] + row.base_path,
                api_key=token or "unused",
                max_retries=0,
                timeout=60,
                http_client=http,
                default_headers=headers,
            )
        return Call(clients[key], http, world.urls["proxy"], token, headers=dict(headers), **overrides)

    return make


def _usage_problems(
    world: World, deferred: list[dict[str, Any]], within: float = 30.0
) -> dict[tuple[str, str], list[str]]:
    """Each request's usage row: written once, exact tokens and cost, the right principals and route."""
    ids = ", ".join(f"'{d['token_id']}'" for d in deferred)
    query = (
        "SELECT token_id, user_id, team_id, org_id, model, route, input_tokens, output_tokens, cost_nanos, "
        f"request_id, status_code FROM usage_events WHERE token_id IN ({ids})"
    )
    deadline = time.monotonic() + within
    with httpx.Client(timeout=30) as http:
        while True:
            answer = http.post(
                f"{world.urls['accounting']}/api/sql", json={"query": query}, headers=world.admin.headers
            )
            assert answer.status_code == 200, answer.text
            result = answer.json()
            rows = [dict(zip(result["columns"], r, strict=True)) for r in result["rows"]]
            if len(rows) >= len(deferred) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    plain = world.people["plain"]
    problems: dict[tuple[str, str], list[str]] = {}
    for d in deferred:
        row: Row = d["row"]
        mine = [r for r in rows if r["token_id"] == d["token_id"]]
        found: list[str] = []
        if len(mine) != 1:
            found.append(f"{len(mine)} usage rows, expected exactly one")
        for r in mine[:1]:
            expected = {
                "user_id": plain.user_id,
                "team_id": world.team_id,
                "org_id": world.org_id,
                "model": "" if row.kind in ("mcp", "list-models") else "fake-model",
                "route": row.path,
                "input_tokens": d["input"],
                "output_tokens": d["output"],
                "cost_nanos": d["input"] * 1000 + d["output"] * 2000,
                "request_id": d["request_id"],
            }
            for key, value in expected.items():
                if r[key] != value and str(r[key]) != str(value):
                    found.append(f"usage {key}={r[key]!r}, expected {value!r}")
        problems[(d.get("rule", "usage row"), row.name)] = found
    return problems


def test_the_slug_route_reads_json_like_v1(world: World) -> None:
    """The user guide's own example: ``POST /{slug}/v1/chat/completions`` with application/json."""
    answer = httpx.post(
        world.urls["proxy"] + "/fake/v1/chat/completions",
        headers={"Authorization": f"Bearer {world.token('ok')}", "Content-Type": "application/json"},
        content=b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi there"}]}',
        timeout=30,
    )
    assert not expect_ok(answer), answer.text


def test_every_route_under_every_rule(world: World) -> None:
    """Runs last among the tests using ``world``: its final rule publishes terms of service."""
    cells: dict[tuple[str, str], tuple[str, str]] = {}
    deferred: list[dict[str, Any]] = []
    with httpx.Client(timeout=60) as http:
        make = _maker(world, http)
        for rule in RULES:
            if rule.before is not None and any(applies(rule, row) is None for row in ROUTES):
                rule.before(world)
            for row in ROUTES:
                reason = applies(rule, row)
                if reason is not None:
                    cells[(rule.name, row.name)] = (report.NOT_APPLICABLE, reason)
                    continue
                try:
                    problems = rule.check(Cell(row, world, make, deferred))
                except NotApplicableHere as exc:
                    cells[(rule.name, row.name)] = (report.NOT_APPLICABLE, str(exc))
                    continue
                except Exception as exc:
                    problems = [f"{type(exc).__name__}: {exc}", *traceback.format_exc().splitlines()[-3:]]
                cells[(rule.name, row.name)] = (
                    (report.FAIL, "; ".join(problems)) if problems else (report.PASS, "")
                )
    for cell, problems in _usage_problems(world, deferred).items():
        if problems:
            cells[cell] = (report.FAIL, "; ".join(problems))
    report.TABLE[:] = report.render([r.name for r in RULES], [r.name for r in ROUTES], cells)
    failures = [line for line in report.TABLE if line.startswith("FAIL")]
    assert not failures, "\n".join(failures)


def test_every_service_answers_with_a_request_id(conformance_stack: Any) -> None:
    """Directory, auth, accounting, ui and the batch worker: their own id or the client's sane one."""
    with httpx.Client(timeout=30) as http:
        for service, url in conformance_stack.urls.items():
            for path in ("/healthz", "/no-such-path"):
                answer = http.get(url + path)
                assert answer.headers.get("x-request-id", "").startswith("req_"), (service, path)
            kept = http.get(url + "/healthz", headers={"x-request-id": "trace-1"})
            assert kept.headers.get("x-request-id") == "trace-1", service
            replaced = http.get(url + "/healthz", headers={"x-request-id": "x" * 300})
            assert replaced.headers.get("x-request-id", "").startswith("req_"), service


def test_an_oversized_header_gets_an_openai_error_not_plain_text(conformance_stack: Any) -> None:
    with httpx.Client(timeout=30) as http:
        answer = http.get(
            conformance_stack.urls["proxy"] + "/v1/models",
            headers={"Authorization": "Bearer " + "a" * 10_000},
        )
    assert not expect_error(answer, 431, "invalid_request_error", "request_header_fields_too_large")
