"""The events bus: every subscriber sees every event in order; a slow one is dropped
without holding anybody up."""

from __future__ import annotations

import asyncio

import pytest

from runtime.containers.events import ContainerEvent, EventBus, EventKind, SubscriberDropped
from tests.unit.builders import container
from tests.waiting import wait_until_async


def event(kind: EventKind, container_id: str = "c1") -> ContainerEvent:
    return ContainerEvent(kind, container(container_id), 1, None, [])


async def take(bus: EventBus, count: int, kinds: list[EventKind]) -> list[EventKind]:
    """Subscribe, then read `count` events into `kinds` as they come."""
    stream = bus.subscribe()
    while len(kinds) < count:
        kinds.append((await anext(stream)).kind)
    await stream.aclose()  # type: ignore[attr-defined]
    return kinds


def test_two_subscribers_see_every_event_in_order() -> None:
    async def scenario() -> list[list[EventKind]]:
        bus = EventBus()
        readers = [asyncio.ensure_future(take(bus, 4, [])) for _ in range(2)]
        assert await wait_until_async(lambda: bus.subscribers == 2)
        for kind in EventKind:
            bus.publish(event(kind))
        return list(await asyncio.gather(*readers))

    assert asyncio.run(scenario()) == [list(EventKind), list(EventKind)]


def test_a_subscriber_too_far_behind_is_dropped_and_others_go_on() -> None:
    async def scenario() -> tuple[int, list[EventKind]]:
        bus = EventBus(queue_size=2)
        slow = bus.subscribe()
        first = asyncio.ensure_future(anext(slow))
        kinds: list[EventKind] = []
        fast = asyncio.ensure_future(take(bus, 4, kinds))
        assert await wait_until_async(lambda: bus.subscribers == 2)
        published: list[EventKind] = []
        for kind in EventKind:
            bus.publish(event(kind))
            published.append(kind)
            # The fast one keeps up: it has read each event before the next is published.
            assert await wait_until_async(lambda: kinds == published)
        await first
        await fast
        with pytest.raises(SubscriberDropped):
            while True:
                await anext(slow)
        return bus.subscribers, kinds

    subscribers, kinds = asyncio.run(scenario())

    assert kinds == list(EventKind)
    assert subscribers == 0
