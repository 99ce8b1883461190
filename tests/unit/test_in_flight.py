"""A mutation whose caller goes away still runs to its end, and drain waits for it."""

from __future__ import annotations

import asyncio

import pytest

from runtime.in_flight import InFlight


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
