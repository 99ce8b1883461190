"""A mutation whose caller goes away still runs to its end, and drain waits for it."""

from __future__ import annotations

import asyncio

import pytest

from runtime.in_flight import InFlight


async def test_a_cancelled_caller_leaves_the_work_running_and_drain_waits_for_it() -> None:
    in_flight = InFlight()
    release = asyncio.Event()
    done: list[str] = []

    async def work() -> str:
        await release.wait()
        done.append("finished")
        return "result"

    caller = asyncio.create_task(in_flight.run(work()))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    draining = asyncio.create_task(in_flight.drain())
    await asyncio.sleep(0)
    assert not draining.done()

    release.set()
    await draining

    assert done == ["finished"]


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
