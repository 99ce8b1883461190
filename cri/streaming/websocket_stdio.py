"""Exec and attach over WebSocket, as kubelet serves them: stdin (0), stdout (1), stderr (2),
error (3) and resize (4) channels on one connection, the final status on the error channel,
then a normal close.

kubelet speaks channel.k8s.io and base64.channel.k8s.io (v1: the status as plain text, nothing
on success) and their v4 forms (the status as metav1.Status JSON); client-go's v5 is v4 plus a
message [255, channel] closing one of the client's channels, which ends stdin. SPDY's v2/v3 have
no WebSocket form.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from cri.streaming.status import encode, error_status, exit_status
from cri.streaming.websocket import Channels, Inbox, WebSocket
from runtime.streaming.streams import TerminalSize

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
# Preference order for `accept`; a client offering no subprotocol gets V1, as from kubelet.
SUBPROTOCOLS = (V5, V4, V4_BASE64, V1, V1_BASE64)

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
_CLOSE_CHANNEL = 255
_MAX_DIMENSION = 0xFFFF  # kubelet decodes sizes as uint16


async def open_stdio(
    ws: WebSocket, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
) -> WebSocketStdio:
    """The exec or attach session on an accepted WebSocket, with the streams the request
    asked for; the client is told the session is up and its messages are read from now on."""
    stdio = WebSocketStdio(ws, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    await stdio.start()
    return stdio


class WebSocketStdio:
    """A StdioClient over a WebSocket channel protocol; build it with `open_stdio`."""

    def __init__(
        self, ws: WebSocket, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
    ) -> None:
        self._ws = ws
        self._channels = Channels(ws, base64_text=ws.subprotocol in (V4_BASE64, V1_BASE64))
        self._status_json = ws.subprotocol in (V5, V4, V4_BASE64)
        self._v5 = ws.subprotocol == V5
        self._stdin, self._stdout, self._stderr, self._tty = stdin, stdout, stderr, tty
        self._stdin_data = Inbox()
        if not stdin:
            self._stdin_data.close()
        # Only the latest size matters to a terminal: sizes not yet taken are replaced.
        self._size: TerminalSize | None = None
        self._resized = asyncio.Event()
        self._gone = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def stdin(self) -> bool:
        return self._stdin

    @property
    def stdout(self) -> bool:
        return self._stdout

    @property
    def stderr(self) -> bool:
        return self._stderr

    @property
    def tty(self) -> bool:
        return self._tty

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    async def start(self) -> None:
        # kubelet's first message, empty, on the lowest channel the client reads: clients
        # take it as the sign that the session is established.
        first = STDOUT if self._stdout else STDERR if self._stderr else ERROR
        await self._channels.send(first, b"")
        self._reader = asyncio.create_task(self._read_client())

    async def read_stdin(self) -> bytes:
        return await self._stdin_data.get()

    async def write_stdout(self, data: bytes) -> None:
        if self._stdout and data:
            await self._channels.send(STDOUT, data)

    async def write_stderr(self, data: bytes) -> None:
        if self._stderr and data:
            await self._channels.send(STDERR, data)

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        while True:
            await self._resized.wait()
            self._resized.clear()
            if self._gone.is_set():
                return
            if self._size is not None:
                size, self._size = self._size, None
                yield size

    async def wait_gone(self) -> None:
        await self._gone.wait()

    async def finish(self, exit_code: int) -> None:
        """Send the command's exit status on the error channel, then close the connection."""
        await self._finish(exit_status(exit_code))

    async def fail(self, message: str) -> None:
        """Report a failure to run or attach (kubelet's InternalError status), then close."""
        await self._finish(error_status(message))

    async def close(self) -> None:
        """Close without a status (the session was cut short, e.g. the server is stopping)."""
        self._stdin_data.close()  # a reader blocked on a full inbox must not hold us up
        await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])

    async def _finish(self, status: dict[str, Any]) -> None:
        payload = encode(status, as_json=self._status_json)
        if payload:
            await self._channels.send(ERROR, payload)
        await self.close()

    async def _read_client(self) -> None:
        try:
            while (message := await self._ws.receive()) is not None:
                frame = self._channels.decode(message)
                if frame is None:
                    continue
                channel, data = frame
                if channel == STDIN:
                    await self._stdin_data.put(data)
                elif channel == RESIZE:
                    self._resize(data)
                elif channel == _CLOSE_CHANNEL and data == bytes((STDIN,)) and self._v5:
                    self._stdin_data.close()
                # Anything else is on a channel the client may not write: dropped, as by kubelet.
        finally:
            self._gone.set()
            self._stdin_data.close()
            self._resized.set()

    def _resize(self, data: bytes) -> None:
        size = _last_size(data)
        if size is not None:
            self._size = size
            self._resized.set()


def _last_size(data: bytes) -> TerminalSize | None:
    """The last valid size in a resize message: one or more JSON objects like
    {"Width":80,"Height":24}, matched case-insensitively as Go's decoder does."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    size = None
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break
        if isinstance(value, dict):
            fields = {str(k).lower(): v for k, v in value.items()}
            width, height = fields.get("width", 0), fields.get("height", 0)
            if all(_is_dimension(v) for v in (width, height)):
                size = TerminalSize(width=width, height=height)
    return size


def _is_dimension(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_DIMENSION
