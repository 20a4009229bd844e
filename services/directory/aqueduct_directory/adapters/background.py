"""A background task that the application wakes whenever it records events (relay, projection)."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

from aqueduct_directory.application.base import DirectoryCore

__all__ = ["WokenByCommits"]


class WokenByCommits(ABC):
    """Subclasses set ``_app`` and call ``super().__init__()``; ``_run`` loops, waiting on ``_wake``."""

    task_name = "directory-background"
    _app: DirectoryCore

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._app.listeners.append(self.wake)
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self.wake in self._app.listeners:
            self._app.listeners.remove(self.wake)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @abstractmethod
    async def _run(self) -> None:
        """Do the work until cancelled, waiting on ``self._wake`` between rounds."""
