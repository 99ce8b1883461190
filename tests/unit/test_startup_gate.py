"""While the agent recovers behind a serving socket, each call waits for what it reads."""

from __future__ import annotations

import asyncio

from cri.startup import StartupGate


async def _waits(gate: StartupGate, method: str) -> bool:
    """True if the call is still held after the loop has run everything else it can."""
    call = asyncio.create_task(gate.wait_for(method))
    for _ in range(5):
        await asyncio.sleep(0)
    held = not call.done()
    call.cancel()
    return held


async def test_version_answers_before_any_recovery() -> None:
    assert not await _waits(StartupGate(), "Version")


async def test_container_reads_wait_for_the_rows_only() -> None:
    gate = StartupGate()
    assert await _waits(gate, "ContainerStatus")

    gate.state_recovered.set()

    assert not await _waits(gate, "ContainerStatus")
    assert not await _waits(gate, "ListPodSandbox")
    assert await _waits(gate, "RunPodSandbox")
    assert await _waits(gate, "Status")


async def test_changes_wait_for_the_whole_recovery() -> None:
    gate = StartupGate()
    gate.state_recovered.set()
    gate.recovered.set()

    assert not await _waits(gate, "RunPodSandbox")
    assert not await _waits(gate, "PullImage")
