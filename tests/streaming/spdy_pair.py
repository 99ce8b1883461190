"""A SPDY session and the test client joined by an in-memory connection, for unit tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cri.streaming.spdy import SpdySession, SpdyStream
from cri.streaming.spdy_frames import SpdyProtocolError
from tests.streaming.pipes import MemoryTransport, memory_pair
from tests.streaming.spdy_client import ClientStream, SpdyClient


@dataclass
class Connection:
    session: SpdySession
    client: SpdyClient
    runner: asyncio.Task[None]
    server_side: MemoryTransport


@contextlib.asynccontextmanager
async def connected(
    *, capacity: int = 1 << 20, start_client: bool = True, **client_options: bool
) -> AsyncIterator[Connection]:
    server_side, client_side = memory_pair(capacity)
    session = SpdySession(server_side)
    runner = asyncio.create_task(session.run())
    client = SpdyClient(client_side, **client_options)
    if start_client:
        await client.start()
    try:
        async with asyncio.timeout(20):  # a hang fails the test instead of the whole run
            yield Connection(session, client, runner, server_side)
    finally:
        await session.close()
        await client.close()
        with contextlib.suppress(SpdyProtocolError):
            await runner


async def open_accepted(
    conn: Connection, headers: dict[str, str] | None = None
) -> tuple[SpdyStream, ClientStream]:
    client_stream = await conn.client.open_stream(headers or {"streamtype": "data"})
    stream = await conn.session.accept()
    assert stream is not None
    await stream.reply()
    await client_stream.wait_reply()
    return stream, client_stream
