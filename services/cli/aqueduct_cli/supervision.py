"""The launcher's watch over its embedded engines: a NATS or Valkey server that dies is started again.

Same binary, same port, same data folder (JetStream's store, Valkey's append-only file) and the same
credentials, so the services, which reconnect on their own, find everything where it was. Each death and
each restart is said on the launcher's output and in ``logs/launcher.log``. A server that keeps dying is
restarted with a growing pause (up to 30 s), so a broken one does not spin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aqueduct_cli.embedded import EmbeddedNats, EmbeddedValkey

__all__ = ["EngineWatch", "Say", "launcher_log"]

Say = Callable[[str], None]


def launcher_log(data_dir: Path) -> Say:
    """Print ``message`` on the launcher's output and append it, timestamped, to ``logs/launcher.log``."""
    path = data_dir / "logs" / "launcher.log"

    def say(message: str) -> None:
        print(f"aqueduct: {message}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}\n")

    return say


@dataclass
class _Watched:
    label: str
    engine: EmbeddedNats | EmbeddedValkey
    log_file: Path
    restarts: int = 0
    died_at: float = 0.0
    reported: bool = False


class EngineWatch:
    """``check()`` (called by the launcher's supervision loop) restarts whichever engine has died."""

    def __init__(self, data_dir: Path, say: Say) -> None:
        self._logs = data_dir / "logs"
        self._say = say
        self._watched: list[_Watched] = []

    def watch(self, label: str, engine: EmbeddedNats | EmbeddedValkey | None) -> None:
        if engine is not None:
            self._watched.append(_Watched(label, engine, self._logs / f"{label.lower()}.log"))

    def check(self) -> None:
        for watched in self._watched:
            process = watched.engine.process
            if process is None or process.poll() is None:
                continue
            now = time.monotonic()
            if not watched.reported:
                watched.died_at, watched.reported = now, True
                self._say(
                    f"the embedded {watched.label} exited with {process.returncode} "
                    f"(port {watched.engine.port}); restarting it with the same data and port"
                )
            if now - watched.died_at < min(30.0, 0.25 * 2 ** min(watched.restarts, 7)) - 0.25:
                continue  # a server that keeps dying waits a little longer each time
            self._restart(watched)

    def _restart(self, watched: _Watched) -> None:
        started = time.monotonic()
        try:
            watched.engine.start(log_file=watched.log_file)
        except Exception as exc:  # port still held, bad store...: try again later, say why
            watched.restarts += 1
            watched.died_at = time.monotonic()
            self._say(f"the embedded {watched.label} did not start again ({exc}); retrying")
            return
        watched.restarts += 1
        watched.reported = False
        self._say(
            f"the embedded {watched.label} is back on port {watched.engine.port} "
            f"(restarted in {time.monotonic() - started:.1f}s, restart #{watched.restarts})"
        )
