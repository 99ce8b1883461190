"""The events bus: every subscriber sees every event in order; a slow one is dropped
without holding anybody up."""

from __future__ import annotations

import asyncio

import pytest

from runtime.container_events import ContainerEvent, EventBus, EventKind, SubscriberDropped
from tests.unit.builders import container


def event(kind: EventKind, container_id: str = "c1") -> ContainerEvent:
    return ContainerEvent(kind, container(container_id), 1, None, [])


async def take(bus: EventBus, count: int, ready: asyncio.Event) -> list[EventKind]:
    kinds = []
    stream = bus.subscribe()
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    ready.set()
    while True:
        kinds.append((await pending).kind)
        if len(kinds) == count:
            await stream.aclose()  # type: ignore[attr-defined]
            return kinds
        pending = asyncio.ensure_future(anext(stream))


def test_two_subscribers_see_every_event_in_order() -> None:
    async def scenario() -> list[list[EventKind]]:
        bus = EventBus()
        readies = [asyncio.Event(), asyncio.Event()]
        readers = [asyncio.ensure_future(take(bus, 4, ready)) for ready in readies]
        for ready in readies:
            await ready.wait()
        for kind in EventKind:
            bus.publish(event(kind))
        return list(await asyncio.gather(*readers))

    assert asyncio.run(scenario()) == [list(EventKind), list(EventKind)]


def test_a_subscriber_too_far_behind_is_dropped_and_others_go_on() -> None:
    async def scenario() -> tuple[int, list[EventKind]]:
        bus = EventBus(queue_size=2)
        slow = bus.subscribe()
        first = asyncio.ensure_future(anext(slow))
        await asyncio.sleep(0)
        ready = asyncio.Event()
        fast = asyncio.ensure_future(take(bus, 4, ready))
        await ready.wait()
        for kind in EventKind:
            bus.publish(event(kind))
            await asyncio.sleep(0)
        await first
        kinds = await fast
        with pytest.raises(SubscriberDropped):
            while True:
                await anext(slow)
        return bus.subscribers, kinds

    subscribers, kinds = asyncio.run(scenario())

    assert kinds == list(EventKind)
    assert subscribers == 0
