"""The server side of a WebSocket (RFC 6455) on an upgraded streaming connection, and the
Kubernetes channel framing the exec, attach and port-forward protocols share on top of it.

Handshake, framing and masking are wsproto's; this module moves the bytes, answers pings and
runs the closing handshake. Every send returns quietly once the connection is gone, and
`receive` then returns None, so the protocols above need no error paths of their own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import cast

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

from cri.streaming.http_front import HttpError

# Far above what exec or port-forward clients send in one message; a bigger one ends the
# connection (1009) rather than being buffered.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# How long a closing handshake may take before the connection is cut.
CLOSE_TIMEOUT_S = 5.0
_READ_BYTES = 64 * 1024


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    raw_head: bytes,
    subprotocols: Sequence[str],
    *,
    allow_no_subprotocol: bool = False,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> WebSocket:
    """Answer the upgrade request in raw_head with a 101 and return the open WebSocket.

    subprotocols are the ones the caller speaks, most preferred first; the first the client
    offered is chosen. A client offering none is accepted without one only when
    allow_no_subprotocol. Raises HttpError (nothing written yet) for a request that is not a
    valid WebSocket upgrade or offers none of subprotocols.
    """
    connection = WSConnection(ConnectionType.SERVER)
    try:
        connection.receive_data(raw_head)
        request = next((e for e in connection.events() if isinstance(e, Request)), None)
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        headers = hint.headers if isinstance(hint, RejectConnection) else []
        raise HttpError(
            status,
            f"bad WebSocket upgrade request: {exc}",
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
        ) from None
    if request is None:
        raise HttpError(400, "bad WebSocket upgrade request: incomplete request head")
    chosen = _choose(request.subprotocols, subprotocols, allow_no_subprotocol)
    writer.write(connection.send(AcceptConnection(subprotocol=chosen)))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    return WebSocket(connection, reader, writer, chosen, max_message_bytes)


def _choose(offered: Sequence[str], supported: Sequence[str], allow_none: bool) -> str | None:
    if not offered and allow_none:
        return None
    for protocol in supported:
        if protocol in offered:
            return protocol
    raise HttpError(
        400,
        f"unable to upgrade: requested WebSocket subprotocols [{', '.join(offered)}] are not "
        f"supported; supported: [{', '.join(supported)}]",
    )


class WebSocket:
    """One open WebSocket. Any number of tasks may send; messages are received by one task at
    a time (`close` takes turns with it to read the peer's closing frame)."""

    def __init__(
        self,
        connection: WSConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        subprotocol: str | None,
        max_message_bytes: int,
    ) -> None:
        self._connection = connection
        self._reader = reader
        self._writer = writer
        self._subprotocol = subprotocol
        self._max_message_bytes = max_message_bytes
        self._parts: list[bytes | str] = []
        self._message_bytes = 0
        self._read_lock = asyncio.Lock()
        # No message will come any more: the peer closed, the transport broke, or we failed it.
        self._ended = False

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    @property
    def closed(self) -> bool:
        return self._ended

    async def receive(self) -> bytes | str | None:
        """The next whole message: bytes for binary, str for text; None once the connection
        has ended (closing handshake, broken transport, protocol error or oversize message)."""
        async with self._read_lock:
            while True:
                message = self._next_message()
                if message is not None or self._ended:
                    return message
                try:
                    data = await self._reader.read(_READ_BYTES)
                except ConnectionError:
                    data = b""
                # None tells wsproto the transport is gone: it reports a 1006 close.
                self._connection.receive_data(data or None)

    async def send_binary(self, data: bytes) -> None:
        await self._send(BytesMessage(data=data))

    async def send_text(self, text: str) -> None:
        await self._send(TextMessage(data=text))

    async def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Run the closing handshake (bounded by CLOSE_TIMEOUT_S), then close the transport.
        Messages still arriving meanwhile are dropped."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if self._open_for_writing():
                    self._writer.write(self._connection.send(CloseConnection(code, reason)))
                    with contextlib.suppress(ConnectionError):
                        await self._writer.drain()
                while not self._ended:
                    await self.receive()
                self._writer.close()
                with contextlib.suppress(ConnectionError):
                    await self._writer.wait_closed()
        except TimeoutError:
            # The peer neither answers nor reads: do not wait for its buffers to drain.
            self._writer.transport.abort()
            self._ended = True

    def _open_for_writing(self) -> bool:
        return self._connection.state is ConnectionState.OPEN and not self._writer.is_closing()

    async def _send(self, event: Event) -> None:
        if not self._open_for_writing():
            return
        self._writer.write(self._connection.send(event))
        try:
            await self._writer.drain()
        except ConnectionError:
            # The reader sees the same loss and ends the connection.
            self._writer.close()

    def _next_message(self) -> bytes | str | None:
        """A whole message out of what has been received, if there is one; handles the
        control frames met on the way."""
        for event in self._connection.events():
            if isinstance(event, BytesMessage | TextMessage):
                self._message_bytes += len(event.data)
                if self._message_bytes > self._max_message_bytes:
                    self._fail(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    return None
                self._parts.append(event.data if isinstance(event.data, str) else bytes(event.data))
                if event.message_finished:
                    return self._take_message()
            elif isinstance(event, Ping):
                if self._open_for_writing():
                    self._writer.write(self._connection.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._on_close(event)
                return None
        return None

    def _take_message(self) -> bytes | str:
        parts, self._parts, self._message_bytes = self._parts, [], 0
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], str):
            return "".join(cast("list[str]", parts))
        return b"".join(cast("list[bytes]", parts))

    def _on_close(self, event: CloseConnection) -> None:
        state = self._connection.state
        if state is ConnectionState.REMOTE_CLOSING and not self._writer.is_closing():
            self._writer.write(self._connection.send(event.response()))
        elif state is ConnectionState.OPEN:
            # wsproto reports a frame it cannot parse as a close carrying the error's code.
            self._fail(event.code, event.reason or "")
        # Otherwise CLOSED: the answer to our own close, or the transport is gone.
        self._end()

    def _fail(self, code: int, reason: str) -> None:
        if self._open_for_writing():
            self._writer.write(self._connection.send(CloseConnection(code, reason)))
        self._end()

    def _end(self) -> None:
        # The server closes the TCP connection first once the closing handshake is done
        # (RFC 6455 7.1.1); close() still flushes what was written.
        self._ended = True
        self._writer.close()


# Kubernetes channel protocols (kubelet's wsstream): each message carries one channel's data.
# Binary variants lead with the channel's byte; base64 variants are text messages led by the
# channel's digit ('0' + channel) with the data base64-encoded.


class Channels:
    """Channel framing over a WebSocket."""

    def __init__(self, ws: WebSocket, *, base64_text: bool) -> None:
        self._ws = ws
        self._base64 = base64_text

    async def send(self, channel: int, data: bytes) -> None:
        if self._base64:
            await self._ws.send_text(chr(ord("0") + channel) + base64.b64encode(data).decode())
        else:
            await self._ws.send_binary(bytes((channel,)) + data)

    def decode(self, message: bytes | str) -> tuple[int, bytes] | None:
        """(channel, data) of a received message; None for one without a channel or with
        broken base64, which kubelet drops too. Either message type is read with the
        negotiated encoding, as kubelet does."""
        if not message:
            return None
        if not self._base64:
            raw = message.encode("utf-8") if isinstance(message, str) else message
            return raw[0], raw[1:]
        text = message if isinstance(message, str) else message.decode("latin-1")
        channel = ord(text[0]) - ord("0")
        if channel < 0:
            return None
        try:
            return channel, base64.b64decode(text[1:], validate=True)
        except (binascii.Error, ValueError):
            return None


# Bytes one channel may hold for its reader before the WebSocket stops being read.
INBOX_LIMIT_BYTES = 1024 * 1024


class Inbox:
    """Data received on one channel, held until its reader takes it. A full inbox makes
    `put` wait, so a slow reader slows the reading of the WebSocket instead of growing memory
    (kubelet's pipes do the same)."""

    def __init__(self, limit: int = INBOX_LIMIT_BYTES) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, data: bytes) -> None:
        if not data:
            return  # b"" is how `get` says end of data
        await self._writable.wait()
        if self._eof:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._readable.set()
        if self._size >= self._limit:
            self._writable.clear()

    def close(self) -> None:
        """No more data: `get` returns what is held, then b""; `put` drops from now on."""
        self._eof = True
        self._readable.set()
        self._writable.set()

    async def get(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size < self._limit:
            self._writable.set()
        return data
