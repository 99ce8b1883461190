"""Each container's writable-layer usage, measured in the background.

A tree walk of an upper dir can take long on a busy container; kubelet asks for stats of
every container every few seconds. So one task walks the upper dirs in a worker thread at a
steady pace and the stats RPCs read the last figures, never walking per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from runtime.host.disk_usage import disk_usage

log = structlog.get_logger("moorage.stats")

REFRESH_INTERVAL_S = 10.0


@dataclass(frozen=True)
class LayerUsage:
    used_bytes: int
    inodes_used: int
    measured_at_ns: int


class WritableLayerUsage:
    def __init__(self, upper_dirs: Callable[[], dict[str, Path]]) -> None:
        """upper_dirs: the containers to measure now, id -> upper dir."""
        self._upper_dirs = upper_dirs
        self._usage: dict[str, LayerUsage] = {}
        self._task: asyncio.Task[None] | None = None

    def get(self, container_id: str) -> LayerUsage | None:
        return self._usage.get(container_id)

    def measure_soon(self, container_id: str, upper: Path) -> None:
        """A first figure for a container that just started, rather than at the next round."""
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self._measure, container_id, upper)

    def _measure(self, container_id: str, upper: Path) -> None:
        if upper.is_dir():
            usage = disk_usage(upper)
            self._usage[container_id] = LayerUsage(
                usage.used_bytes, usage.inodes_used, time.time_ns()
            )

    def refresh(self) -> None:
        """Measure every container once (blocking)."""
        dirs = self._upper_dirs()
        for container_id, upper in dirs.items():
            self._measure(container_id, upper)
        for gone in set(self._usage) - set(dirs):
            self._usage.pop(gone, None)

    def start(self, interval_s: float = REFRESH_INTERVAL_S) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(interval_s))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, interval_s: float) -> None:
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except OSError as exc:
                log.warning("measuring writable layers failed", error=str(exc))
            await asyncio.sleep(interval_s)
