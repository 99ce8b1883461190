"""Container lifecycle events fanned out to every GetContainerEvents subscriber.

Each subscriber has a bounded queue. Publishing never waits: a subscriber whose queue is full
has fallen too far behind and is dropped (its stream ends), so one slow client never delays
the agent or the other subscribers. Kubelet re-subscribes and relists, as it does after any
stream error.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from runtime.containers.model import Container
from runtime.pods.model import Sandbox

log = structlog.get_logger("moorage.events")

QUEUE_SIZE = 1000


class EventKind(enum.Enum):
    CREATED = "created"
    STARTED = "started"
    STOPPED = "stopped"
    DELETED = "deleted"


@dataclass(frozen=True)
class ContainerEvent:
    kind: EventKind
    container: Container
    created_at_ns: int
    # The pod as it was when the event happened, and its containers then.
    sandbox: Sandbox | None
    pod_containers: list[Container]


class SubscriberDropped(Exception):
    """The subscriber fell more than QUEUE_SIZE events behind."""


_DROPPED = object()


class EventBus:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._queues: set[asyncio.Queue[object]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, event: ContainerEvent) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                # The marker goes in place of the oldest event, so the subscriber learns why
                # its stream ended as soon as it reads on.
                queue.get_nowait()
                queue.put_nowait(_DROPPED)
                log.warning("events subscriber dropped: too far behind", queue=self._queue_size)

    async def subscribe(self) -> AsyncIterator[ContainerEvent]:
        queue: asyncio.Queue[object] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is _DROPPED:
                    raise SubscriberDropped(f"more than {self._queue_size} events behind")
                assert isinstance(item, ContainerEvent)
                yield item
        finally:
            self._queues.discard(queue)
