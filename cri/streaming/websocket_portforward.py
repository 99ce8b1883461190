"""Port-forward over WebSocket, as kubelet serves it: the ports come in the URL query, and the
i-th port gets channel 2i for its data and 2i+1 for errors. The first message on each channel
is the port, two bytes little-endian, so the client can tell the channels apart.

One WebSocket carries one connection per port; the protocol has no half-close, so the client
learns that the pod side is done only when the whole session ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from cri.streaming.websocket import Channels, Inbox, WebSocket
from runtime.streaming.streams import PortStream

V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
# Preference order for `accept`; a client offering no subprotocol gets the binary framing.
SUBPROTOCOLS = (V4, V4_BASE64)
# Channel numbers are one byte, and 255 is reserved.
MAX_PORTS = 127


async def serve_port_forward(
    ws: WebSocket, ports: Sequence[int], handle: Callable[[PortStream], Awaitable[None]]
) -> None:
    """Run handle on each port's stream, all at once; close the WebSocket once every one has
    returned. A client that goes away first cancels the handlers still running: there is
    nobody left to forward to."""
    if not 0 < len(ports) <= MAX_PORTS:
        raise ValueError(f"port-forward over WebSocket takes 1 to {MAX_PORTS} ports")
    channels = Channels(ws, base64_text=ws.subprotocol == V4_BASE64)
    streams = [WebSocketPortStream(channels, index, port) for index, port in enumerate(ports)]
    for stream in streams:
        await stream.announce()
    reader = asyncio.create_task(_read_client(ws, channels, streams))

    async def forward(stream: PortStream) -> None:
        await handle(stream)

    try:
        async with asyncio.TaskGroup() as group:
            handlers = [group.create_task(forward(stream)) for stream in streams]

            def client_gone(_: asyncio.Task[None]) -> None:
                for task in handlers:
                    task.cancel()

            reader.add_done_callback(client_gone)
    finally:
        for stream in streams:
            stream.end_of_input()
        await ws.close()
        reader.cancel()
        await asyncio.wait([reader])


class WebSocketPortStream:
    """One port's PortStream: its data and error channels."""

    def __init__(self, channels: Channels, index: int, port: int) -> None:
        self._channels = channels
        self._port = port
        self._data_channel = 2 * index
        self._error_channel = 2 * index + 1
        self._input = Inbox()
        self._write_closed = False

    @property
    def port(self) -> int:
        return self._port

    async def announce(self) -> None:
        prefix = self._port.to_bytes(2, "little")
        await self._channels.send(self._data_channel, prefix)
        await self._channels.send(self._error_channel, prefix)

    async def received(self, data: bytes) -> None:
        await self._input.put(data)

    def end_of_input(self) -> None:
        self._input.close()

    async def read(self) -> bytes:
        return await self._input.get()

    async def write(self, data: bytes) -> None:
        if data and not self._write_closed:
            await self._channels.send(self._data_channel, data)

    async def close_write(self) -> None:
        # Nothing to send: the protocol cannot tell the client (see the module docstring).
        self._write_closed = True

    async def report_error(self, message: str) -> None:
        await self._channels.send(self._error_channel, message.encode())


async def _read_client(
    ws: WebSocket, channels: Channels, streams: Sequence[WebSocketPortStream]
) -> None:
    try:
        while (message := await ws.receive()) is not None:
            frame = channels.decode(message)
            if frame is None:
                continue
            channel, data = frame
            index, is_error_channel = divmod(channel, 2)
            # The error channels are the server's to write; kubelet drops what comes on them.
            if not is_error_channel and index < len(streams):
                await streams[index].received(data)
    finally:
        for stream in streams:
            stream.end_of_input()
