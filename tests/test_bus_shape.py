"""One way to use the bus: FastStream handlers and publishers, and the one KV reader in libs (``kvload``).

Every stream consumer and subscriber of the services and libs is a FastStream handler. nats-py's own
subscriptions, pulls and watches are allowed in one module only: ``aqueduct_libs/kvload.py``, the reader
behind ``KVWatcher`` and ``read_bucket`` (FastStream's KV watch is nats-py's one-message-at-a-time ordered
consumer, which loads a large auth snapshot in seconds, not in a fraction of one). Tests and benchmarks
may watch the bus with nats-py to check what a service did; they are not scanned.

Every publish goes through a FastStream publisher (``aqueduct_libs.publishers``: the objects the AsyncAPI
document describes) or a broker's ``publish``/``request``. A publish with nats-py itself (a connection's or
a JetStream context's ``publish``, ``publish_async`` or ``request``) is allowed only in the modules of
``RAW_PUBLISH_ALLOWED``, each for the reason it gives.
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

PUBLISHING_CALLS = frozenset({"publish", "publish_async", "request"})
# What a FastStream object is called where it publishes: a broker, a publisher (``*_publisher``).
FASTSTREAM_RECEIVERS = ("broker", "publisher")
# What a nats-py connection or JetStream context is called: published with in any module.
NATS_PY_RECEIVERS = frozenset({"nc", "_nc", "js", "_js", "connection", "jetstream"})
RAW_PUBLISH_ALLOWED = {
    THE_ONE_READER: "its consumer API requests (the reader's own ordered consumers)",
    "services/accounting/aqueduct_accounting/entrypoints/stream_consumer.py": "the pull requests of "
    "accounting's FastStream pull subscriber (several outstanding at once: part of consuming, not data)",
    "services/directory/aqueduct_directory/adapters/projection.py": "puts to the auth snapshot KV bucket, "
    "pipelined (a KV store, which FastStream does not wrap, as kv.put and kv.delete beside them)",
}


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


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):  # nc.jetstream().publish(...)
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _raw_publishes(path: Path) -> list[str]:
    """nats-py publishes: on a nats-py receiver anywhere, on anything but a FastStream object in a module
    that imports nats-py."""
    tree = ast.parse(path.read_text(), str(path))
    nats_py = _uses_nats_py(tree)
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in PUBLISHING_CALLS
        ):
            continue
        name = _receiver_name(node.func.value)
        faststream = any(word in name.lower() for word in FASTSTREAM_RECEIVERS)
        if name in NATS_PY_RECEIVERS or (nats_py and not faststream):
            found.append(f"{node.lineno}: {name}.{node.func.attr}(...)")
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


def test_the_publish_scan_tells_nats_py_from_faststream(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "import nats\n"
        "async def f(self, nc, broker):\n"
        "    await nc.publish('a', b'')\n"
        "    await self._js.publish_async('a', b'')\n"
        "    await nc.jetstream().publish('a', b'')\n"
        "    await self.broker.publish(b'', 'a')\n"
        "    await self._publisher.publish(b'', 'a', stream='S')\n"
    )
    assert [call.split(":")[0] for call in _raw_publishes(module)] == ["3", "4", "5"]
    assert _raw_publishes(ROOT / THE_ONE_READER), "the scan no longer recognises nats-py's publish"


def test_nothing_but_faststream_publishers_publishes_on_the_bus() -> None:
    offenders = {
        relative: calls
        for path in _production_modules()
        if (relative := str(path.relative_to(ROOT))) not in RAW_PUBLISH_ALLOWED
        and (calls := _raw_publishes(path))
    }
    assert not offenders, (
        f"nats-py publishes outside FastStream publishers: {offenders}. Declare the publisher in "
        "aqueduct_libs.publishers (it then appears in docs/asyncapi.yaml: `make asyncapi`) and publish with it."
    )


def test_the_publish_allow_list_holds_only_what_still_publishes_with_nats_py() -> None:
    stale = [p for p in RAW_PUBLISH_ALLOWED if not (ROOT / p).exists() or not _raw_publishes(ROOT / p)]
    assert not stale, f"converted or gone, remove from RAW_PUBLISH_ALLOWED: {stale}"
