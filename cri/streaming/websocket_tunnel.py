"""SPDY tunnelled through a WebSocket, the way kubectl port-forward reaches the node since
client-go's tunneling connection: the subprotocol names the SPDY protocol behind a "SPDY/3.1+"
prefix, and binary messages carry the SPDY bytes as they are, with no framing of their own and
no HTTP upgrade inside: the SPDY session starts at once.
"""

from __future__ import annotations

from wsproto.frame_protocol import CloseReason

from cri.streaming.websocket import WebSocket

SUBPROTOCOL = "SPDY/3.1+portforward.k8s.io"
SUBPROTOCOLS = (SUBPROTOCOL,)


class WebSocketTransport:
    """A ByteTransport over an accepted WebSocket; message boundaries carry no meaning."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._message = b""
        self._offset = 0

    async def read(self, max_bytes: int) -> bytes:
        while self._offset >= len(self._message):  # an empty message is not end of stream
            message = await self._ws.receive()
            if message is None:
                return b""
            if isinstance(message, str):
                # client-go fails a tunnel on a text message; the SPDY stream would be broken.
                await self._ws.close(CloseReason.UNSUPPORTED_DATA, "text message in SPDY tunnel")
                return b""
            self._message, self._offset = message, 0
        if self._offset == 0 and len(self._message) <= max_bytes:
            data, self._message = self._message, b""
            return data
        end = self._offset + max_bytes
        data = self._message[self._offset : end]
        self._offset = end
        return data

    async def write(self, data: bytes) -> None:
        if data:
            await self._ws.send_binary(data)

    async def close(self) -> None:
        await self._ws.close()
