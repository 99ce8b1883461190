"""Work on one object at a time, and work that runs to completion even when its caller goes
away: the per-object locks and shielded tasks of the sandbox, container and image managers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar, cast

T = TypeVar("T")


class InFlight:
    """A kubelet that times out a call must not leave a half-made pod or container: each
    mutation runs as a task of its own, shielded from the caller's cancellation, and the
    agent waits for all of them before it stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._by_key: dict[str, asyncio.Task[Any]] = {}

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        return await asyncio.shield(self._start(work))

    async def join(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """As run, but while work under this key is under way a second caller waits for its
        result instead of starting the same work again (one pull per image reference)."""
        task = self._by_key.get(key)
        if task is None:
            task = self._start(work())
            self._by_key[key] = task
            task.add_done_callback(lambda _: self._by_key.pop(key, None))
        return await asyncio.shield(cast("asyncio.Task[T]", task))

    def _start(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for every mutation under way, even those whose caller went away."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class KeyedLocks:
    """One asyncio.Lock per key (a sandbox, container, blob or layer id), dropped when nobody
    holds or waits for it: removed objects leave no lock behind, and a caller still waiting
    on a removed object's lock shares it with whoever comes next."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def users(self, key: str) -> int:
        """How many callers hold or wait for key's lock."""
        return self._users.get(key, 0)

    @contextlib.asynccontextmanager
    async def held(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
