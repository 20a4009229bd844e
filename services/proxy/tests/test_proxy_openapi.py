"""The proxy's ``/openapi.json`` documents every route the proxy serves, read from the router of the app
as ``python -m aqueduct_proxy`` wires it (model routes, files, batches, MCP, the JupyterHub bridge), so
a route added without its documentation fails here."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aqueduct_proxy.bootstrap import bootstrap
from conftest import common_settings, proxy_settings

pytestmark = [pytest.mark.nats]

_METHODS = ("get", "post", "put", "patch", "delete")


async def test_every_served_route_is_in_the_openapi_document_and_nothing_else(
    nats_url: str, valkey_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = proxy_settings(valkey_url)
    monkeypatch.setenv("AQUEDUCT_PROXY_JUPYTERHUB_ENABLED", "true")  # every feature, the bridge included
    proxy = await bootstrap(settings.model_copy(update={"common": common_settings(nats_url, tmp_path)}))
    await proxy.start()
    await asyncio.wait_for(proxy.watchers[0].ready.wait(), 10)
    runner = web.AppRunner(proxy.app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{settings.host}:{settings.port}/openapi.json") as answer,
        ):
            assert answer.status == 200
            document = await answer.json()
        served: dict[str, set[str]] = {}
        for route in proxy.app.router.routes():
            assert route.resource is not None
            if route.method != "HEAD":  # aiohttp adds HEAD to every GET
                served.setdefault(route.resource.canonical, set()).add(route.method.lower())
    finally:
        await runner.cleanup()
        await proxy.stop()

    paths = document["paths"]
    assert set(served) == set(paths), "routes served but not documented, or documented but not served"
    for path, methods in served.items():
        documented = {m for m in paths[path] if m in _METHODS}
        assert documented, f"{path} documents no method"
        if "*" not in methods:  # a catch-all route documents the methods it means
            assert methods == documented, f"{path}: served {sorted(methods)}, documented {sorted(documented)}"
        for method in documented:
            operation = paths[path][method]
            assert operation["summary"] and "200" in operation["responses"], f"{method} {path}"
            if path.startswith(("/v1/", "/mcp/", "/{slug}/")):
                assert {"bearer": []} in operation["security"], f"{method} {path} names no token"
                assert "401" in operation["responses"], f"{method} {path} documents no 401"
        for parameter in (p for p in paths[path].get("parameters", []) if p["in"] == "path"):
            assert "{" + parameter["name"] + "}" in path
    refs = {r.split("/")[-1] for r in _refs(document)}
    assert refs <= set(document["components"]["schemas"]), "a $ref to a schema that is not there"
    assert {"File", "Batch", "JsonRpcMessage"} <= refs


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
