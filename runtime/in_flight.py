"""Mutations that run to completion even when their caller goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class InFlight:
    """A kubelet that times out a call must not leave a half-made pod or container: each
    mutation runs as a task of its own, shielded from the caller's cancellation, and the
    agent waits for all of them before it stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for every mutation under way, even those whose caller went away."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
