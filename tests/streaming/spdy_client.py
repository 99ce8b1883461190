"""A SPDY/3.1 client for tests, written from the protocol description and sharing no code with
cri/streaming/spdy.py (own framing, own zlib contexts), so each checks the other. It plays
client-go's part: opens streams, sends data and FIN, reads replies and data per stream.

    client, protocol = await connect(host, port, "/exec/TOKEN", ["v4.channel.k8s.io"])
    stream = await client.open_stream({"streamtype": "stdout"})
    await stream.wait_reply()
    output = await stream.read_all()
    await client.close()

flow_control=True (the default) behaves as SPDY/3.1 asks: SETTINGS at the start, writes held
to the server's windows, WINDOW_UPDATE for what the test reads (unless window_updates=False).
flow_control=False behaves as client-go does: none of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections import deque
from collections.abc import Mapping, Sequence

from cri.streaming.transport import ByteTransport, StreamTransport

SPDY_VERSION = 3
WINDOW = 65536
FRAME_MAX = 16384  # client-go writes in pieces of about this size

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9,
)  # fmt: skip
FIN = 0x01
INITIAL_WINDOW_SIZE_ID = 7


def _zlib_dictionary() -> bytes:
    names = [
        "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
        "accept-encoding", "accept-language", "accept-ranges", "age", "allow",
        "authorization", "cache-control", "connection", "content-base", "content-encoding",
        "content-language", "content-length", "content-location", "content-md5",
        "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host",
        "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
        "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate",
        "proxy-authorization", "range", "referer", "retry-after", "server", "te", "trailer",
        "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
        "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
        "public", "set-cookie", "keep-alive", "origin",
    ]  # fmt: skip
    statuses = "100 101 201 202 205 206 300 302 303 304 305 306 307 402 405 406 407 408 409 "
    statuses += "410 411 412 413 414 415 416 417 502 504 505"
    reasons = [
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
    ]
    dates = "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    dates += "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    types = "chunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    types += "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    types += "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    out = bytearray()
    for name in names:
        out += struct.pack("!L", len(name)) + name.encode("ascii")
    out += (statuses.replace(" ", "") + "".join(reasons) + dates + types).encode("ascii")
    return bytes(out)


ZLIB_DICTIONARY = _zlib_dictionary()


def control_frame(kind: int, flags: int, payload: bytes, version: int = SPDY_VERSION) -> bytes:
    """A control frame as bytes, for tests that send frames by hand (malformed ones too)."""
    return struct.pack("!HHL", 0x8000 | version, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, payload: bytes) -> bytes:
    return struct.pack("!LL", stream_id, (flags << 24) | len(payload)) + payload


class StreamReset(ConnectionError):
    def __init__(self, stream_id: int, status: int) -> None:
        super().__init__(f"stream {stream_id} reset with status {status}")
        self.status = status


class ClientStream:
    def __init__(self, client: SpdyClient, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.reply_headers: dict[str, str] | None = None
        self.reset_status: int | None = None  # the server's RST_STREAM status
        self.fin_received = False
        self.send_window = send_window
        self.received = 0  # bytes of DATA that arrived, read or not
        self._client = client
        self._chunks: deque[bytes] = deque()
        self._changed = asyncio.Event()

    async def wait_reply(self) -> dict[str, str]:
        while self.reply_headers is None:
            if self.reset_status is not None:
                raise StreamReset(self.id, self.reset_status)
            if self._client.disconnected:
                raise ConnectionResetError("connection closed before the reply")
            await self._wait()
        return self.reply_headers

    async def wait_received(self, size: int) -> None:
        """Until size bytes arrived on the stream (whether or not the test read them)."""
        while self.received < size and not self._over():
            await self._wait()

    async def read(self) -> bytes:
        """The next DATA payload; b"" at the server's FIN, a reset or the end."""
        while not self._chunks:
            if self._over():
                return b""
            await self._wait()
        chunk = self._chunks.popleft()
        if self._client.window_updates and not self._client.disconnected:
            with contextlib.suppress(OSError):  # the server may have closed by now
                await self._client.window_update(self.id, len(chunk))
                await self._client.window_update(0, len(chunk))
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        await self._client._send_data(self, data)

    async def close(self) -> None:
        await self._client._send(data_frame(self.id, FIN, b""))

    async def reset(self, status: int = 5) -> None:
        await self._client._send(control_frame(RST_STREAM, 0, struct.pack("!LL", self.id, status)))

    def _broken(self) -> bool:
        return self.reset_status is not None or self._client.disconnected

    def _over(self) -> bool:
        return self.fin_received or self._broken()

    def _notify(self) -> None:
        self._changed.set()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()


class SpdyClient:
    """The client end of one connection; start() it (or use it as a context manager)."""

    def __init__(
        self, transport: ByteTransport, *, flow_control: bool = True, window_updates: bool = True
    ) -> None:
        self.flow_control = flow_control
        self.window_updates = flow_control and window_updates
        self.goaway: tuple[int, int] | None = None  # (last stream id, status)
        self.resets: list[tuple[int, int]] = []  # every RST_STREAM received
        self.window_updates_received: list[tuple[int, int]] = []
        self.disconnected = False
        self._transport = transport
        # One context per direction for the connection's life, as SPDY/3 requires.
        self._compress = zlib.compressobj(9, zlib.DEFLATED, 15, 8, 0, ZLIB_DICTIONARY)
        self._decompress = zlib.decompressobj(15, ZLIB_DICTIONARY)
        self._lock = asyncio.Lock()
        self._streams: dict[int, ClientStream] = {}
        self._next_stream_id = 1
        self._next_ping_id = 1
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._initial_send_window = WINDOW
        self._session_send_window = WINDOW
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.flow_control:
            entry = struct.pack("!LL", INITIAL_WINDOW_SIZE_ID, WINDOW)
            await self._send(control_frame(SETTINGS, 0, struct.pack("!L", 1) + entry))
        self._reader = asyncio.create_task(self._read_frames())

    async def __aenter__(self) -> SpdyClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            await self._transport.close()
        if self._reader is not None:
            await self._reader

    async def wait_disconnected(self) -> None:
        while not self.disconnected:
            await self._wait()

    async def wait_goaway(self) -> tuple[int, int]:
        while self.goaway is None:
            if self.disconnected:
                raise ConnectionResetError("closed without GOAWAY")
            await self._wait()
        return self.goaway

    async def wait_reset(self, stream_id: int) -> int:
        """The status of the server's RST_STREAM for stream_id, opened by us or not."""
        while True:
            for sid, status in self.resets:
                if sid == stream_id:
                    return status
            if self.disconnected:
                raise ConnectionResetError(f"closed without resetting stream {stream_id}")
            await self._wait()

    async def open_stream(self, headers: Mapping[str, str], *, fin: bool = False) -> ClientStream:
        """SYN_STREAM with the next stream id; wait_reply() on the result for SYN_REPLY."""
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        stream = ClientStream(self, stream_id, self._initial_send_window)
        self._streams[stream_id] = stream
        lowered = {name.lower(): value for name, value in headers.items()}
        await self.send_syn_stream(stream_id, lowered, flags=FIN if fin else 0)
        return stream

    async def send_syn_stream(
        self, stream_id: int, headers: Mapping[str, str], *, flags: int = 0
    ) -> None:
        """A SYN_STREAM for any id and headers as given, even wrong ones; the block still goes
        through our compression context. Later streams of open_stream() get higher ids."""
        self._next_stream_id = max(self._next_stream_id, stream_id + 1 + stream_id % 2)
        await self.send_header_frame(
            SYN_STREAM, struct.pack("!LLBB", stream_id, 0, 0, 0), headers, flags=flags
        )

    async def send_header_frame(
        self, kind: int, head: bytes, headers: Mapping[str, str], *, flags: int = 0
    ) -> None:
        """A control frame of kind: head, then the compressed header block."""
        async with self._lock:
            frame = control_frame(kind, flags, head + self._header_block(headers))
            await self._transport.write(frame)

    async def ping(self) -> None:
        """A PING, returning once the server echoed it."""
        ping_id = self._next_ping_id
        self._next_ping_id += 2
        pong = asyncio.get_running_loop().create_future()
        self._pongs[ping_id] = pong
        await self._send(control_frame(PING, 0, struct.pack("!L", ping_id)))
        await pong

    async def window_update(self, stream_id: int, delta: int) -> None:
        await self._send(control_frame(WINDOW_UPDATE, 0, struct.pack("!LL", stream_id, delta)))

    async def go_away(self, status: int = 0) -> None:
        last = max(self._streams, default=0)
        await self._send(control_frame(GOAWAY, 0, struct.pack("!LL", last, status)))

    async def send_raw(self, data: bytes) -> None:
        await self._send(data)

    # -- internals --------------------------------------------------------------------------

    def _header_block(self, headers: Mapping[str, str]) -> bytes:
        raw = bytearray(struct.pack("!L", len(headers)))
        for name, value in headers.items():
            for field in (name.encode(), value.encode()):
                raw += struct.pack("!L", len(field)) + field
        return self._compress.compress(bytes(raw)) + self._compress.flush(zlib.Z_SYNC_FLUSH)

    def _parse_block(self, compressed: bytes) -> dict[str, str]:
        raw = self._decompress.decompress(compressed)
        count = struct.unpack_from("!L", raw)[0]
        offset, headers = 4, {}
        for _ in range(count):
            fields = []
            for _field in range(2):
                length = struct.unpack_from("!L", raw, offset)[0]
                fields.append(raw[offset + 4 : offset + 4 + length].decode())
                offset += 4 + length
            headers[fields[0]] = fields[1]
        return headers

    async def _send(self, frame: bytes) -> None:
        async with self._lock:
            await self._transport.write(frame)

    async def _send_data(self, stream: ClientStream, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            size = min(len(data) - offset, FRAME_MAX)
            if self.flow_control:
                while (
                    stream.send_window <= 0 or self._session_send_window <= 0
                ) and not stream._broken():
                    await self._wait()
                size = min(size, stream.send_window, self._session_send_window)
            if stream._broken():
                raise ConnectionResetError(f"stream {stream.id} is over")
            stream.send_window -= size
            self._session_send_window -= size
            await self._send(data_frame(stream.id, 0, data[offset : offset + size]))
            offset += size

    def _notify(self) -> None:
        self._changed.set()
        for stream in self._streams.values():
            stream._notify()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def _read_exactly(self, buffer: bytearray, size: int) -> bool:
        while len(buffer) < size:
            chunk = await self._transport.read(256 * 1024)
            if not chunk:
                return False
            buffer += chunk
        return True

    async def _read_frames(self) -> None:
        buffer = bytearray()
        try:
            while await self._read_exactly(buffer, 8):
                first, second = struct.unpack_from("!LL", buffer)
                length = second & 0xFFFFFF
                if not await self._read_exactly(buffer, 8 + length):
                    break
                payload = bytes(buffer[8 : 8 + length])
                del buffer[: 8 + length]
                if first & 0x80000000:
                    await self._on_control(first & 0xFFFF, second >> 24, payload)
                else:
                    self._on_data(first, second >> 24, payload)
                self._notify()
        except OSError:
            pass
        finally:
            self.disconnected = True
            for pong in self._pongs.values():
                if not pong.done():
                    pong.set_exception(ConnectionResetError("closed before the PING echo"))
            self._notify()

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if payload:
            stream._chunks.append(payload)
            stream.received += len(payload)
        if flags & FIN:
            stream.fin_received = True

    async def _on_control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind in (SYN_REPLY, HEADERS):
            stream_id = struct.unpack_from("!L", payload)[0] & 0x7FFFFFFF
            headers = self._parse_block(payload[4:])
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.reply_headers = {**(stream.reply_headers or {}), **headers}
                stream.fin_received = stream.fin_received or bool(flags & FIN)
        elif kind == RST_STREAM:
            stream_id, status = struct.unpack("!LL", payload)
            self.resets.append((stream_id, status))
            if (stream := self._streams.get(stream_id)) is not None:
                stream.reset_status = status
        elif kind == SETTINGS:
            for offset in range(4, len(payload), 8):
                setting, value = struct.unpack_from("!LL", payload, offset)
                if setting & 0xFFFFFF == INITIAL_WINDOW_SIZE_ID:
                    for stream in self._streams.values():
                        stream.send_window += value - self._initial_send_window
                    self._initial_send_window = value
        elif kind == PING:
            (ping_id,) = struct.unpack("!L", payload)
            if ping_id % 2 == 0:
                await self._send(control_frame(PING, 0, payload))
            elif (pong := self._pongs.pop(ping_id, None)) is not None:
                pong.set_result(None)
        elif kind == GOAWAY:
            last, status = struct.unpack("!LL", payload)
            self.goaway = (last, status)
        elif kind == WINDOW_UPDATE:
            stream_id, delta = struct.unpack("!LL", payload)
            self.window_updates_received.append((stream_id, delta))
            if stream_id == 0:
                self._session_send_window += delta
            elif (stream := self._streams.get(stream_id)) is not None:
                stream.send_window += delta


class UpgradeRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused with {status}: {body!r}")
        self.status = status
        self.body = body


async def upgrade(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    path: str,
    protocols: Sequence[str],
    *,
    host: str = "localhost",
) -> str:
    """client-go's upgrade request on an open connection; the protocol the server chose."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
        "Content-Length: 0",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.strip().split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status != 101:
        body = await reader.read(int(headers.get("content-length", "65536")))
        raise UpgradeRefused(status, body)
    return headers.get("x-stream-protocol-version", "")


async def connect(
    host: str,
    port: int,
    path: str,
    protocols: Sequence[str],
    *,
    flow_control: bool = True,
    window_updates: bool = True,
) -> tuple[SpdyClient, str]:
    """Connect, upgrade and start a client: (client, chosen protocol)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        protocol = await upgrade(reader, writer, path, protocols, host=f"{host}:{port}")
    except BaseException:
        writer.close()
        raise
    client = SpdyClient(
        StreamTransport(reader, writer), flow_control=flow_control, window_updates=window_updates
    )
    await client.start()
    return client, protocol
