"""Every service has the same composition root (``aqueduct_libs.service``): ``bootstrap(settings, common)``
returning a ``Service``, and ``run()``, which ``python -m aqueduct_<name>`` calls."""

from __future__ import annotations

import ast
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


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_bootstrap_and_run(name: str) -> None:
    module = importlib.import_module(f"aqueduct_{name}.bootstrap")
    bootstrap, run = module.bootstrap, module.run

    assert inspect.iscoroutinefunction(bootstrap), "bootstrap may connect: it is a coroutine"
    parameters = list(inspect.signature(bootstrap).parameters.values())
    assert [p.name for p in parameters[:2]] == ["settings", "common"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in parameters[:2])
    # Anything more is a keyword with a default (what tests choose), so bootstrap(settings, common) serves.
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in parameters[2:]), parameters
    hints = get_type_hints(bootstrap)
    assert issubclass(hints["settings"], BaseSettings)
    assert hints["settings"].__module__ == f"aqueduct_{name}.settings"
    assert hints["common"] is CommonSettings
    assert _implements_service(hints["return"]) == []

    assert not inspect.signature(run).parameters, "run() reads its settings from the environment"
    assert get_type_hints(run)["return"] is type(None)


@pytest.mark.parametrize("name", SERVICES)
def test_python_dash_m_calls_run(name: str) -> None:
    main = importlib.import_module(f"aqueduct_{name}")
    source = (Path(main.__file__).parent / "__main__.py").read_text()
    called = {
        node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
    }
    assert "run" in called


async def test_bootstrap_returns_a_service_with_its_app(tmp_path: Path) -> None:
    """The services whose wiring needs no bus before ``start``: what bootstrap returns is a ``Service``."""
    from aqueduct_auth.bootstrap import bootstrap as auth
    from aqueduct_directory.bootstrap import bootstrap as directory
    from aqueduct_directory.settings import DirectorySettings
    from aqueduct_ui.bootstrap import bootstrap as ui

    common = CommonSettings(dev_mode=True, data_dir=tmp_path, secret_key="shape-test-secret-0123456789abcdef")
    built: list[Any] = [
        await auth(AuthSettings(), common),
        await ui(UISettings(), common, use_bus=False),
        await directory(DirectorySettings(), common),
    ]
    try:
        for service in built:
            assert isinstance(service, Service)
            assert callable(service.app)  # an ASGI application
            assert service.ready() is False  # nothing started yet
    finally:
        for service in built:
            await service.stop()
