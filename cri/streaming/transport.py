"""A bidirectional byte stream a protocol runs over: a TCP connection after the HTTP upgrade,
or the binary messages of a WebSocket when SPDY is tunnelled through one."""

from __future__ import annotations

import asyncio
from typing import Protocol

CLOSE_TIMEOUT_S = 2.0


class ByteTransport(Protocol):
    async def read(self, max_bytes: int) -> bytes:
        """Up to max_bytes; b"" at end of stream (or once the peer has gone)."""
        ...

    async def write(self, data: bytes) -> None:
        """Send data; waits while the peer does not read (back-pressure)."""
        ...

    async def close(self) -> None: ...


class StreamTransport:
    """ByteTransport over an asyncio stream pair; bytes already read from the reader before
    the upgrade (a pipelined first frame) are served first."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, leftover: bytes = b""
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._leftover = leftover

    async def read(self, max_bytes: int) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
            return data
        try:
            return await self._reader.read(max_bytes)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        # A peer that stopped reading would keep unsent bytes, and the close, waiting forever.
        try:
            await asyncio.wait_for(self._writer.wait_closed(), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            self._writer.transport.abort()
