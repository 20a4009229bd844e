"""Every service has the same composition root (``aqueduct_libs.service``): ``bootstrap(settings)``
returning a ``Service``, and ``run()``, which ``python -m aqueduct_<name>`` calls. The settings object
carries the common ones (``settings.common``, ``AQUEDUCT_*``)."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from pydantic_settings import BaseSettings

from aqueduct_auth.settings import AuthSettings
from aqueduct_libs.service import Service
from aqueduct_libs.settings import CommonSettings
from aqueduct_ui.settings import UISettings

SERVICES = ("proxy", "accounting", "directory", "auth", "ui")
# Every process of the product: its package, and the module of its settings class.
PROCESSES = {
    **{f"aqueduct_{name}": f"aqueduct_{name}.settings" for name in SERVICES},
    "aqueduct_proxy.batches": "aqueduct_proxy.batches.settings",  # the batch worker
}


def _implements_service(cls: type) -> list[str]:
    """What ``cls`` lacks of ``Service``: ``app``, coroutine ``start`` and ``stop``, a ``ready()`` method."""
    lacks = [] if "app" in get_type_hints(cls) else ["app"]
    for name in ("start", "stop"):
        if not inspect.iscoroutinefunction(getattr(cls, name, None)):
            lacks.append(f"async {name}()")
    ready = getattr(cls, "ready", None)
    if not inspect.isfunction(ready) or inspect.iscoroutinefunction(ready):
        lacks.append("ready()")
    return lacks


@pytest.mark.parametrize("package", PROCESSES)
def test_each_service_has_bootstrap_and_run(package: str) -> None:
    module = importlib.import_module(f"{package}.bootstrap")
    bootstrap, run = module.bootstrap, module.run

    assert inspect.iscoroutinefunction(bootstrap), "bootstrap may connect: it is a coroutine"
    parameters = list(inspect.signature(bootstrap).parameters.values())
    assert parameters[0].name == "settings"
    assert (
        parameters[0].kind is parameters[0].POSITIONAL_OR_KEYWORD
        and parameters[0].default is parameters[0].empty
    )
    # Anything more is a keyword with a default (what tests choose), so bootstrap(settings) serves.
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in parameters[1:]), parameters
    hints = get_type_hints(bootstrap)
    settings = hints["settings"]
    assert issubclass(settings, BaseSettings)
    assert settings.__module__ == PROCESSES[package]
    # The common settings are part of the service's own, read from the environment with them.
    assert get_type_hints(settings)["common"] is CommonSettings
    assert settings.model_fields["common"].default_factory is CommonSettings
    assert _implements_service(hints["return"]) == []

    assert not inspect.signature(run).parameters, "run() reads its settings from the environment"
    assert get_type_hints(run)["return"] is type(None)


def test_the_common_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from aqueduct_proxy.batches.settings import BatchWorkerSettings

    monkeypatch.setenv("AQUEDUCT_NATS_URL", "nats://bus.example:4222")
    monkeypatch.setenv("AQUEDUCT_UI_PORT", "9090")
    settings = UISettings()
    assert (settings.port, settings.common.nats_url) == (9090, "nats://bus.example:4222")
    assert BatchWorkerSettings().common.nats_url == "nats://bus.example:4222"
    monkeypatch.setenv("AQUEDUCT_SECRET_KEY", "changeme")  # refused outside the embedded mode
    with pytest.raises(ValueError, match="AQUEDUCT_SECRET_KEY"):
        AuthSettings()


@pytest.mark.parametrize("package", PROCESSES)
def test_python_dash_m_calls_run(package: str) -> None:
    main = importlib.import_module(package)
    source = (Path(main.__file__).parent / "__main__.py").read_text()
    called = {
        node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
    }
    assert "run" in called


@pytest.mark.nats
@pytest.mark.chdb
@pytest.mark.slow
async def test_every_service_bootstraps_starts_gets_ready_and_stops(tmp_path: Path) -> None:
    """All five and the batch worker on one real bus, through the shape alone: bootstrap, start, ready,
    stop."""
    from aqueduct_accounting.bootstrap import bootstrap as accounting
    from aqueduct_accounting.settings import AccountingSettings
    from aqueduct_auth.bootstrap import bootstrap as auth
    from aqueduct_cli.embedded import EmbeddedNats
    from aqueduct_directory.bootstrap import bootstrap as directory
    from aqueduct_directory.settings import DirectorySettings
    from aqueduct_proxy.batches.bootstrap import bootstrap as batch_worker
    from aqueduct_proxy.batches.settings import BatchWorkerSettings
    from aqueduct_proxy.bootstrap import bootstrap as proxy
    from aqueduct_proxy.settings import ProxySettings
    from aqueduct_ui.bootstrap import bootstrap as ui

    bus = EmbeddedNats(tmp_path / "nats").start()
    common = CommonSettings(
        dev_mode=True, nats_url=bus.url, data_dir=tmp_path / "data", secret_key="shape-test-0123456789abcdef"
    )
    started: list[Any] = []
    try:
        # The directory first (it creates the streams and buckets), auth before the UI (it publishes the
        # session keys the UI waits for).
        for service in [
            await directory(DirectorySettings(common=common)),
            await auth(AuthSettings(common=common)),
            await ui(UISettings(common=common)),
            await proxy(ProxySettings(redis_url="", common=common)),  # no Valkey: limits not counted
            await accounting(AccountingSettings(common=common)),
            await batch_worker(BatchWorkerSettings(proxy=ProxySettings(redis_url=""), common=common)),
        ]:
            assert isinstance(service, Service)
            assert callable(service.app)  # an ASGI application, or an aiohttp one (proxy, batch worker)
            await service.start()
            started.append(service)
        for service in started:
            for _ in range(300):
                if service.ready():
                    break
                await asyncio.sleep(0.1)
            assert service.ready(), f"{type(service).__name__} not ready after 30 s"
    finally:
        for service in reversed(started):
            await service.stop()
        bus.stop()
