"""A mutation whose caller goes away still runs to its end, and drain waits for it."""

from __future__ import annotations

import asyncio

import pytest

from runtime.in_flight import InFlight, KeyedLocks
from tests.waiting import wait_until_async


async def test_a_cancelled_caller_leaves_the_work_running_and_drain_waits_for_it() -> None:
    in_flight = InFlight()
    started, release, draining = asyncio.Event(), asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def work() -> str:
        started.set()
        await release.wait()
        done.append("finished")
        return "result"

    async def drain_then_look() -> list[str]:
        # Nothing awaits between set() and drain's first wait: once this task is seen
        # draining, drain has looked at the work under way.
        draining.set()
        await in_flight.drain()
        return list(done)

    caller = asyncio.create_task(in_flight.run(work()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    drained = asyncio.create_task(drain_then_look())
    await draining.wait()
    assert not drained.done()

    release.set()

    assert await drained == ["finished"]


async def test_run_returns_the_result_and_raises_the_error() -> None:
    in_flight = InFlight()

    async def fails() -> None:
        raise ValueError("no")

    async def answers() -> int:
        return 42

    assert await in_flight.run(answers()) == 42
    with pytest.raises(ValueError, match="no"):
        await in_flight.run(fails())
    await in_flight.drain()


async def test_join_gives_a_second_caller_the_first_ones_result() -> None:
    in_flight = InFlight()
    release = asyncio.Event()
    started: list[str] = []

    async def pull(name: str) -> str:
        started.append(name)
        await release.wait()
        return f"pulled by {name}"

    first = asyncio.create_task(in_flight.join("busybox", lambda: pull("first")))
    second = asyncio.create_task(in_flight.join("busybox", lambda: pull("second")))
    other = asyncio.create_task(in_flight.join("alpine", lambda: pull("other")))
    assert await wait_until_async(lambda: len(started) == 2)
    release.set()

    assert [await first, await second, await other] == [
        "pulled by first",
        "pulled by first",
        "pulled by other",
    ]
    assert started == ["first", "other"]
    assert await in_flight.join("busybox", lambda: pull("again")) == "pulled by again"


async def test_keyed_locks_serialise_one_key_and_leave_others_free() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.held("c1"):
            order.append("first in")
            inside.set()
            await release.wait()
            order.append("first out")

    async def waiter() -> None:
        async with locks.held("c1"):
            order.append("second in")

    first = asyncio.create_task(holder())
    await inside.wait()
    second = asyncio.create_task(waiter())
    async with locks.held("c2"):
        order.append("other key")
    assert await wait_until_async(lambda: locks.users("c1") == 2)
    release.set()
    await asyncio.gather(first, second)

    assert order == ["first in", "other key", "first out", "second in"]


async def test_a_key_nobody_holds_or_waits_for_keeps_no_lock() -> None:
    locks = KeyedLocks()
    async with locks.held("gone"):
        pass
    with pytest.raises(RuntimeError):
        async with locks.held("failing"):
            raise RuntimeError("released on error too")
    # The map is private: only its emptiness is the promise (removed objects leave no lock).
    assert not locks._locks
