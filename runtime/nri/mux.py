"""NRI's multiplexer (containerd/nri pkg/net/multiplex): several logical connections over the
one unix-socket connection between a plugin and the runtime, the trunk.

Each trunk frame is a 4-byte big-endian connection id, a 4-byte big-endian payload length and
the payload, at most one ttrpc frame long; longer writes go out as several frames. Opening a
connection sends nothing: both ends just agree on the ids. NRI uses two, one ttrpc
conversation each: on PLUGIN_SERVICE_CONN the runtime calls the plugin's Plugin service, on
RUNTIME_SERVICE_CONN the plugin calls the runtime's Runtime service.

As upstream, frames for a connection nobody opened are dropped, and a connection with more
than `read_queue_length` frames unread ends the whole trunk: a peer that floods one connection
cannot grow our memory without bound. Unlike upstream, a frame longer than that bound (which
no upstream peer sends) ends the trunk too, instead of being read into memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque

import structlog

from runtime.nri import ttrpc
from runtime.nri.streams import ByteReader, ByteWriter

log = structlog.get_logger("moorage.nri")

HEADER = struct.Struct(">II")
HEADER_LENGTH = HEADER.size
MAX_PAYLOAD_LENGTH = ttrpc.HEADER_LENGTH + ttrpc.MAX_MESSAGE_LENGTH
READ_QUEUE_LENGTH = 256
RESERVED_CONN = 0
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2
# A peer that stops reading must not hold close() for ever.
_CLOSE_GRACE_S = 2.0


class MuxProtocolError(Exception):
    """The peer broke the multiplexing, or overran a connection's read queue."""


def encode_frames(conn_id: int, data: bytes) -> bytes:
    """data as trunk frames for conn_id, cut where it exceeds one frame's payload."""
    parts: list[bytes] = []
    for start in range(0, len(data), MAX_PAYLOAD_LENGTH):
        chunk = data[start : start + MAX_PAYLOAD_LENGTH]
        parts += (HEADER.pack(conn_id, len(chunk)), chunk)
    return b"".join(parts)


def decode_header(header: bytes) -> tuple[int, int]:
    """(connection id, payload length) of a trunk frame."""
    conn_id, length = HEADER.unpack(header)
    if length > MAX_PAYLOAD_LENGTH:
        raise MuxProtocolError(
            f"frame of {length} bytes for connection {conn_id}, over {MAX_PAYLOAD_LENGTH}"
        )
    return conn_id, length


class MuxConnection:
    """One logical connection: a ByteReader and a ByteWriter, so ttrpc runs over it as
    over a socket. Reading delivers what arrived, then the end of the stream."""

    def __init__(self, mux: Mux, conn_id: int, read_queue_length: int) -> None:
        self.id = conn_id
        self._mux = mux
        self._read_queue_length = read_queue_length
        self._frames: deque[bytes] = deque()
        self._offset = 0  # into the first frame, the part already read
        self._buffered = 0
        self._arrived = asyncio.Event()
        self._ended = False

    async def readexactly(self, n: int, /) -> bytes:
        while self._buffered < n:
            if self._ended:
                if self._mux.error is not None:
                    raise ConnectionAbortedError(f"NRI mux: {self._mux.error}")
                raise asyncio.IncompleteReadError(self._take(self._buffered), n)
            self._arrived.clear()
            await self._arrived.wait()
        return self._take(n)

    def write(self, data: bytes, /) -> None:
        if self._ended:
            raise ConnectionResetError(f"NRI mux connection {self.id} is closed")
        self._mux._send(encode_frames(self.id, data))

    async def drain(self) -> None:
        await self._mux._drain()

    def close(self) -> None:
        """End this connection only; frames that still come for it are dropped."""
        self._mux._forget(self)
        self._end()

    async def wait_closed(self) -> None:
        """Nothing to wait for: the trunk, which is shared, stays open."""

    def _take(self, n: int) -> bytes:
        parts = []
        while n:
            frame = self._frames[0]
            piece = frame[self._offset : self._offset + n]
            parts.append(piece)
            n -= len(piece)
            self._buffered -= len(piece)
            self._offset += len(piece)
            if self._offset == len(frame):
                self._frames.popleft()
                self._offset = 0
        return b"".join(parts)

    def _deliver(self, payload: bytes) -> None:
        if len(self._frames) >= self._read_queue_length:
            raise MuxProtocolError(f"read queue of connection {self.id} overflowed")
        self._frames.append(payload)
        self._buffered += len(payload)
        self._arrived.set()

    def _end(self) -> None:
        self._ended = True
        self._arrived.set()


class Mux:
    """The logical connections over one trunk. `open()` the connections, then `start()`
    reading the trunk (frames for a connection not open yet would be dropped); `close()`
    ends the trunk and every connection."""

    def __init__(
        self,
        reader: ByteReader,
        writer: ByteWriter,
        *,
        read_queue_length: int = READ_QUEUE_LENGTH,
        peer: str = "peer",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._read_queue_length = read_queue_length
        self._peer = peer
        self._conns: dict[int, MuxConnection] = {}
        self._read_task: asyncio.Task[None] | None = None
        self._ended = False
        self._closed = asyncio.Event()
        self.error: Exception | None = None
        """Why the trunk ended, unless the peer or close() ended it in an orderly way."""

    @property
    def closed(self) -> bool:
        """The trunk has ended (it may still be shutting down)."""
        return self._ended

    def open(self, conn_id: int) -> MuxConnection:
        """The connection with this id, the same one while it is open."""
        if conn_id == RESERVED_CONN:
            raise ValueError(f"NRI mux connection id {RESERVED_CONN} is reserved")
        if self._ended:
            raise ConnectionResetError("NRI mux is closed")
        conn = self._conns.get(conn_id)
        if conn is None:
            conn = self._conns[conn_id] = MuxConnection(self, conn_id, self._read_queue_length)
        return conn

    def start(self) -> None:
        if self._read_task is None and not self._ended:
            self._read_task = asyncio.create_task(self._read_frames())

    async def close(self) -> None:
        """End the trunk and every connection on it, and wait until the trunk is shut down;
        idempotent."""
        await self._end(None)

    async def wait_closed(self) -> None:
        """Wait until the trunk has ended and is shut down, whoever ended it."""
        await self._closed.wait()

    async def _read_frames(self) -> None:
        error: Exception | None = None
        try:
            while True:
                conn_id, length = decode_header(await self._reader.readexactly(HEADER_LENGTH))
                payload = await self._reader.readexactly(length)
                conn = self._conns.get(conn_id)
                if conn is None:
                    log.debug("nri mux frame dropped", peer=self._peer, conn=conn_id)
                elif payload:
                    conn._deliver(payload)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                error = MuxProtocolError("the trunk ended inside a frame")
        except (MuxProtocolError, ConnectionError) as exc:
            error = exc
        await self._end(error)

    def _send(self, frames: bytes) -> None:
        if self._ended:
            raise ConnectionResetError("NRI mux is closed")
        self._writer.write(frames)

    async def _drain(self) -> None:
        await self._writer.drain()

    def _forget(self, conn: MuxConnection) -> None:
        if self._conns.get(conn.id) is conn:
            del self._conns[conn.id]

    async def _end(self, error: Exception | None) -> None:
        if self._ended:
            await self._closed.wait()
            return
        self._ended = True
        self.error = error
        if error is not None:
            log.warning("nri mux failed", peer=self._peer, error=str(error))
        for conn in self._conns.values():
            conn._end()
        self._conns.clear()
        try:
            if self._read_task is not None and self._read_task is not asyncio.current_task():
                self._read_task.cancel()
                await asyncio.gather(self._read_task, return_exceptions=True)
            self._writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await self._writer.wait_closed()
        finally:
            self._closed.set()
