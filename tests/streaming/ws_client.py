"""A WebSocket client for tests of the streaming server, and a loopback server to run the
server side on.

The client shares no code with the server's WebSocket modules, so each checks the other:
wsproto (client mode) frames the messages, and the Kubernetes channel protocols are written
here from their description
(a channel byte before binary data; the channel's digit before base64 text; [255, channel]
closing a channel in v5; resize as {"Width":W,"Height":H} on channel 4).

    ws = await WsClient.connect("127.0.0.1", port, "/exec/TOKEN", ["v5.channel.k8s.io"])
    client = ChannelClient(ws)
    await client.send(0, b"echo hi\\n")
    await client.close_stdin()
    out = await client.read(1, 3)
    rest = await client.read_to_end()  # {channel: bytes}, once the server closed
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from cri.streaming.http_front import HttpError, send_error

# Every wait on the server is bounded: a broken server fails the test instead of hanging it.
TIMEOUT_S = 10.0
_READ_BYTES = 1 << 20


class Rejected(Exception):
    """The server answered the upgrade with a plain HTTP response."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class WsClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: WSConnection,
        subprotocol: str | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._connection = connection
        self.subprotocol = subprotocol
        # The server's close code; 1006 if the connection ended without a closing frame.
        self.close_code: int | None = None
        self.pongs: list[bytes] = []
        self._parts: list[Any] = []

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, subprotocols: Sequence[str] = ()
    ) -> WsClient:
        """Open the WebSocket; raises Rejected when the server refuses the upgrade."""
        async with asyncio.timeout(TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            connection = WSConnection(ConnectionType.CLIENT)
            request = Request(host=f"{host}:{port}", target=path, subprotocols=list(subprotocols))
            writer.write(connection.send(request))
            status, body = 0, b""
            while True:
                data = await reader.read(_READ_BYTES)
                if not data:
                    writer.close()
                    raise Rejected(status, body)
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, AcceptConnection):
                        return cls(reader, writer, connection, event.subprotocol)
                    if isinstance(event, RejectConnection):
                        status = event.status_code
                    elif isinstance(event, RejectData):
                        body += event.data
                        if event.body_finished:
                            writer.close()
                            raise Rejected(status, body)

    async def send_binary(self, data: bytes) -> None:
        await self._send(self._connection.send(BytesMessage(data=data)))

    async def send_text(self, text: str) -> None:
        await self._send(self._connection.send(TextMessage(data=text)))

    async def send_fragments(self, parts: Sequence[bytes]) -> None:
        """One binary message in len(parts) frames."""
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            await self._send(self._connection.send(BytesMessage(data=part, message_finished=last)))

    async def ping(self, payload: bytes) -> None:
        await self._send(self._connection.send(Ping(payload=payload)))

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, for malformed frames."""
        await self._send(data)

    async def receive(self) -> bytes | str | None:
        """The next message; None once the server closed (see close_code)."""
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                for event in self._connection.events():
                    if isinstance(event, BytesMessage | TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            parts, self._parts = self._parts, []
                            if isinstance(parts[0], str):
                                return "".join(parts)
                            return b"".join(parts)
                    elif isinstance(event, Ping):
                        await self._send(self._connection.send(event.response()))
                    elif isinstance(event, Pong):
                        self.pongs.append(bytes(event.payload))
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        if self._connection.state is ConnectionState.REMOTE_CLOSING:
                            await self._send(self._connection.send(event.response()))
                        self._writer.close()
                        return None
                if self.close_code is not None:
                    return None
                try:
                    data = await self._reader.read(_READ_BYTES)
                except ConnectionError:
                    data = b""
                self._connection.receive_data(data or None)

    async def close(self, code: int = 1000) -> None:
        """Start the closing handshake and wait for the server's answer."""
        if self._connection.state is ConnectionState.OPEN:
            await self._send(self._connection.send(CloseConnection(code=code)))
        while await self.receive() is not None:
            pass

    def vanish(self) -> None:
        """Drop the connection as a crashed client would: a TCP reset, no closing frame."""
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()


class ChannelClient:
    """The Kubernetes channel protocols over a WsClient."""

    def __init__(self, ws: WsClient, *, base64_text: bool = False) -> None:
        self.ws = ws
        self._base64 = base64_text
        self._held: dict[int, bytearray] = {}

    async def send(self, channel: int, data: bytes) -> None:
        if self._base64:
            await self.ws.send_text(chr(ord("0") + channel) + base64.b64encode(data).decode())
        else:
            await self.ws.send_binary(bytes([channel]) + data)

    async def close_stdin(self) -> None:
        """v5's close signal for channel 0."""
        await self.ws.send_binary(bytes([255, 0]))

    async def resize(self, width: int, height: int) -> None:
        await self.send(4, json.dumps({"Width": width, "Height": height}).encode())

    async def receive(self) -> tuple[int, bytes] | None:
        """The next message as (channel, data); None once the server closed."""
        message = await self.ws.receive()
        if message is None:
            return None
        if self._base64:
            assert isinstance(message, str), "base64 protocols send text messages"
            return ord(message[0]) - ord("0"), base64.b64decode(message[1:], validate=True)
        assert isinstance(message, bytes), "binary protocols send binary messages"
        return message[0], message[1:]

    async def read(self, channel: int, size: int) -> bytes:
        """The next size bytes of channel; what comes on other channels meanwhile is held for
        later reads. Raises EOFError if the server closes first."""
        held = self._held.setdefault(channel, bytearray())
        while len(held) < size:
            frame = await self.receive()
            if frame is None:
                raise EOFError(f"closed with {bytes(held)!r} of {size} bytes on channel {channel}")
            self._held.setdefault(frame[0], bytearray()).extend(frame[1])
        data = bytes(held[:size])
        del held[:size]
        return data

    async def read_to_end(self) -> dict[int, bytes]:
        """Everything not read yet, by channel, once the server has closed."""
        while (frame := await self.receive()) is not None:
            self._held.setdefault(frame[0], bytearray()).extend(frame[1])
        held, self._held = self._held, {}
        return {channel: bytes(data) for channel, data in held.items() if data}


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


class LoopbackServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.tasks: set[asyncio.Task[None]] = set()
        self.problems: list[object] = []

    async def connect(self, path: str, subprotocols: Sequence[str] = ()) -> WsClient:
        return await WsClient.connect("127.0.0.1", self.port, path, subprotocols)

    async def wait_handlers(self) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while pending := [t for t in self.tasks if not t.done()]:
                await asyncio.wait(pending)


@asynccontextmanager
async def loopback_server(handler: Handler) -> AsyncIterator[LoopbackServer]:
    """Serve handler on 127.0.0.1 as the streaming server would: each connection's request
    head is read and handed over, and an HttpError becomes the HTTP answer. On leaving, every
    handler must have ended without raising, and no exception may have gone unretrieved."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        state.tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer, head)
        except HttpError as exc:
            await send_error(writer, exc)
        except Exception as exc:  # reported by the test rather than lost in asyncio
            state.problems.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    state = LoopbackServer(server.sockets[0].getsockname()[1])
    loop.set_exception_handler(lambda _, context: state.problems.append(context))
    try:
        yield state
        await state.wait_handlers()
    finally:
        server.close()
        for task in state.tasks:
            task.cancel()
        await server.wait_closed()
        gc.collect()  # "exception was never retrieved" is reported when a task is collected
        loop.set_exception_handler(previous)
    assert not state.problems, state.problems
