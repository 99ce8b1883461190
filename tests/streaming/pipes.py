"""An in-memory connection for protocol tests: two ByteTransports joined by bounded buffers,
so a side that stops reading holds the other's writes, observably (`Channel.stalled`)."""

from __future__ import annotations

import asyncio


class Channel:
    """One direction. A write waits while `capacity` bytes are unread."""

    def __init__(self, capacity: int) -> None:
        self._buffer = bytearray()
        self._capacity = capacity
        self._closed = False
        self._changed = asyncio.Event()
        self.stalled = asyncio.Event()  # set once a writer had to wait for the reader
        self.written = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def write(self, data: bytes) -> None:
        while len(self._buffer) >= self._capacity and not self._closed:
            self.stalled.set()
            await self._wait()
        if self._closed:
            raise ConnectionResetError("channel closed")
        self._buffer += data
        self.written += len(data)
        self._changed.set()

    async def read(self, max_bytes: int) -> bytes:
        while not self._buffer and not self._closed:
            await self._wait()
        data = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        self._changed.set()
        return data

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()


class MemoryTransport:
    def __init__(self, incoming: Channel, outgoing: Channel) -> None:
        self.incoming = incoming
        self.outgoing = outgoing

    async def read(self, max_bytes: int) -> bytes:
        return await self.incoming.read(max_bytes)

    async def write(self, data: bytes) -> None:
        await self.outgoing.write(data)

    async def close(self) -> None:
        self.outgoing.close()
        self.incoming.close()


def memory_pair(capacity: int = 1 << 20) -> tuple[MemoryTransport, MemoryTransport]:
    """(server side, client side) of one connection."""
    to_server, to_client = Channel(capacity), Channel(capacity)
    return MemoryTransport(to_server, to_client), MemoryTransport(to_client, to_server)
