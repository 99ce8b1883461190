"""The suite's one way to wait for a condition: poll it, backing off, until a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

FIRST_DELAY_S = 0.005
MAX_DELAY_S = 0.1


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll `condition` until it holds or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    delay_s = FIRST_DELAY_S
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, MAX_DELAY_S)
    return True


async def wait_until_async(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """wait_until for a condition that the running event loop must make true meanwhile."""
    deadline = time.monotonic() + timeout_s
    delay_s = FIRST_DELAY_S
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, MAX_DELAY_S)
    return True
