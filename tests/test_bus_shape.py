"""One way to consume the bus: FastStream handlers, and the one KV reader in libs (``kvload``).

Every stream consumer and subscriber of the services and libs is a FastStream handler. nats-py's own
subscriptions, pulls and watches are allowed in one module only: ``aqueduct_libs/kvload.py``, the reader
behind ``KVWatcher`` and ``read_bucket`` (FastStream's KV watch is nats-py's one-message-at-a-time ordered
consumer, which loads a large auth snapshot in seconds, not in a fraction of one). Tests and benchmarks
may watch the bus with nats-py to check what a service did; they are not scanned.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# nats-py calls that subscribe, pull or watch (FastStream's are ``subscriber(...)`` registrations).
CONSUMING_CALLS = frozenset(
    {"subscribe", "subscribe_bind", "pull_subscribe", "pull_subscribe_bind", "fetch", "watch", "watchall"}
)
# Names other libraries use too (the launcher "watches" its engines): counted in modules that use nats-py.
AMBIGUOUS_CALLS = frozenset({"fetch", "watch"})
CONSUMING_IMPORTS = frozenset({"nats.aio.subscription"})
THE_ONE_READER = "libs/aqueduct_libs/kvload.py"
# Modules still consuming with nats-py while they are moved to FastStream (none left).
NOT_CONVERTED_YET: frozenset[str] = frozenset()


def _production_modules() -> list[Path]:
    roots = [ROOT / "libs" / "aqueduct_libs", *sorted((ROOT / "services").glob("*/aqueduct_*"))]
    return sorted(path for root in roots for path in root.rglob("*.py"))


def _uses_nats_py(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "nats" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "nats":
            return True
    return False


def _consuming(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    calls = CONSUMING_CALLS if _uses_nats_py(tree) else CONSUMING_CALLS - AMBIGUOUS_CALLS
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls:
            found.append(f"{node.lineno}: .{node.func.attr}(...)")
        elif isinstance(node, ast.ImportFrom) and node.module in CONSUMING_IMPORTS:
            found.append(f"{node.lineno}: from {node.module} import ...")
    return found


def test_the_scan_sees_every_service_and_a_consuming_call() -> None:
    scanned = {path.relative_to(ROOT).parts[1] for path in _production_modules()}
    assert {"aqueduct_libs", "proxy", "directory", "auth", "accounting", "ui", "cli"} <= scanned
    assert _consuming(ROOT / THE_ONE_READER), "the scan no longer recognises nats-py's subscribe"


def test_nothing_but_faststream_handlers_and_the_one_reader_consumes_the_bus() -> None:
    offenders = {
        relative: calls
        for path in _production_modules()
        if (relative := str(path.relative_to(ROOT))) not in {THE_ONE_READER, *NOT_CONVERTED_YET}
        and (calls := _consuming(path))
    }
    assert not offenders, (
        "nats-py subscribes, pulls or watches outside FastStream handlers and libs/aqueduct_libs/kvload.py: "
        f"{offenders}. Register a FastStream subscriber on the service's broker instead "
        "(aqueduct_libs.broker), or read a KV bucket with aqueduct_libs.bus.read_bucket / KVWatcher."
    )


def test_the_allow_list_holds_only_what_still_consumes_with_nats_py() -> None:
    stale = [p for p in NOT_CONVERTED_YET if not (ROOT / p).exists() or not _consuming(ROOT / p)]
    assert not stale, f"converted or gone, remove from NOT_CONVERTED_YET: {stale}"
