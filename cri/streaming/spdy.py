"""The server side of SPDY/3.1 (draft-mbelshe-httpbis-spdy-00 plus the 3.1 session window), as
client-go (kubectl, crictl) speaks it for exec, attach and port-forward after the HTTP upgrade.

Only what a server of those needs: the client opens every stream and we answer; we never open
or push streams. All header blocks of one direction share one zlib stream (seeded with the
SPDY/3 dictionary) for the whole connection, so header frames are compressed and written
under the same lock, in wire order.

Flow control: client-go (moby/spdystream) never sends WINDOW_UPDATE or SETTINGS and ignores
ours, so holding writes at an exhausted window would stall every exec past 64 KiB. A peer
therefore opts in to flow control by sending either frame; until it does, our writes are held
back by the transport alone. In the other direction we announce what we consume, but take
data past the window too (client-go overruns it), and stop reading the connection while a
stream holds more than a window of unread data, so memory stays bounded either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping

from cri.streaming.spdy_frames import (
    DEFAULT_WINDOW,
    FLAG_FIN,
    FLAG_UNIDIRECTIONAL,
    MAX_DATA_FRAME,
    MAX_OPEN_STREAMS,
    MAX_WINDOW,
    SETTINGS_INITIAL_WINDOW_SIZE,
    TWO_U32,
    U32,
    VERSION,
    Frame,
    FrameReader,
    FrameType,
    GoAwayStatus,
    HeaderCodec,
    RstStatus,
    SpdyProtocolError,
    SpdyStreamClosed,
    StreamError,
    control_frame,
    parse_header_block,
)
from cri.streaming.transport import ByteTransport

# How long close() waits on a client that does not read its GOAWAY and last bytes.
_CLOSE_GRACE_S = 2.0


class SpdyStream:
    """One stream the client opened. Reply before writing; read until b""."""

    def __init__(
        self, session: SpdySession, stream_id: int, headers: dict[str, str], flags: int
    ) -> None:
        self.id = stream_id
        self.headers = headers  # lowercased names
        self._session = session
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._unacked = 0
        self._send_window = session._peer_initial_window
        self._replied = False
        self._closed_by_peer = bool(flags & FLAG_FIN)
        self._closed_by_us = bool(flags & FLAG_UNIDIRECTIONAL)
        self._reset = False
        self._aborted = asyncio.Event()
        self._readable = asyncio.Event()
        self._drained = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.reset_status: int | None = None  # the client's RST_STREAM status, if it sent one

    @property
    def closed_by_peer(self) -> bool:
        return self._closed_by_peer

    @property
    def aborted(self) -> bool:
        """Reset by either side, or the connection ended before the stream did."""
        return self._aborted.is_set()

    async def wait_aborted(self) -> None:
        await self._aborted.wait()

    async def reply(self, headers: Mapping[str, str] | None = None, *, fin: bool = False) -> None:
        async with self._write_lock:
            if self._replied:
                raise RuntimeError(f"stream {self.id} already replied")
            self._check_open()
            self._replied = True
            await self._session._send_headers(FrameType.SYN_REPLY, fin, self.id, headers or {})
            if fin:
                self._closed_by_us = True
                self._session._forget_if_done(self)

    async def read(self) -> bytes:
        """The next DATA payload; b"" once the client closed its side or the connection
        ended (after what had arrived), and at once after a reset."""
        while not self._reset and not self._chunks:
            if self._closed_by_peer or self.aborted:
                return b""
            self._readable.clear()
            await self._readable.wait()
        if self._reset:
            return b""
        data = self._chunks.popleft()
        self._buffered -= len(data)
        self._drained.set()
        with contextlib.suppress(SpdyStreamClosed):
            await self._session._consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        """Send data in frames, each waiting for window (if the peer does flow control)."""
        async with self._write_lock:
            self._check_open()
            if not self._replied:
                raise RuntimeError(f"stream {self.id} written before its reply")
            with memoryview(data) as view:
                sent = 0
                while sent < len(view):
                    size = await self._session._reserve(self, len(view) - sent)
                    await self._session._send_data(self, 0, view[sent : sent + size])
                    sent += size

    async def close(self) -> None:
        """Our FIN; idempotent, and quiet once the stream or the connection is gone."""
        async with self._write_lock:
            if self._closed_by_us or self.aborted:
                return
            if not self._replied:
                raise RuntimeError(f"stream {self.id} closed before its reply")
            self._closed_by_us = True
            with contextlib.suppress(SpdyStreamClosed):
                await self._session._send_data(self, FLAG_FIN, b"")
            self._session._forget_if_done(self)

    async def reset(self, status: RstStatus = RstStatus.CANCEL) -> None:
        if self.aborted:
            return
        self._abort(reset=True)
        with contextlib.suppress(SpdyStreamClosed):
            await self._session._send_rst(self.id, status)

    def _check_open(self) -> None:
        if self.aborted:
            raise SpdyStreamClosed(f"stream {self.id} was reset or its connection ended")
        if self._closed_by_us:
            raise SpdyStreamClosed(f"stream {self.id} is closed for writing")

    def _deliver(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._readable.set()

    def _peer_fin(self) -> None:
        self._closed_by_peer = True
        self._readable.set()
        self._session._forget_if_done(self)

    def _abort(self, *, reset: bool) -> None:
        self._reset = self._reset or reset
        self._aborted.set()
        self._readable.set()
        self._drained.set()
        self._session._forget(self)


class SpdySession:
    """One SPDY connection: `run()` reads it until the client goes (run it as a task);
    `accept()` hands out the streams the client opens."""

    def __init__(self, transport: ByteTransport) -> None:
        self._transport = transport
        self._frames = FrameReader(transport)
        self._codec = HeaderCodec()
        self._write_lock = asyncio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._last_stream_id = 0
        self._accepting = True
        self._flow_control = False
        self._peer_initial_window = DEFAULT_WINDOW
        self._send_window = DEFAULT_WINDOW
        self._window_opened = asyncio.Event()
        self._unacked = 0
        self._ended = asyncio.Event()
        self._closed = False

    @property
    def ended(self) -> bool:
        """The connection is over: the client left, broke the protocol, or we closed it."""
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def run(self) -> None:
        """Read frames until the end of the connection; raises SpdyProtocolError (after
        GOAWAY) if the client breaks the protocol. Streams still open end aborted."""
        try:
            while (frame := await self._frames.next()) is not None:
                try:
                    await self._dispatch(frame)
                except StreamError as exc:
                    await self._reset_stream(exc.stream_id, exc.status)
        except SpdyProtocolError:
            await self.close(GoAwayStatus.PROTOCOL_ERROR)
            raise
        except SpdyStreamClosed:
            pass  # our side of the connection broke while answering
        finally:
            self._end()

    async def accept(self) -> SpdyStream | None:
        """The next stream the client opened; None once it will open no more."""
        stream = await self._incoming.get()
        if stream is None:
            self._incoming.put_nowait(None)  # for any later caller too
        return stream

    async def close(self, status: GoAwayStatus = GoAwayStatus.OK) -> None:
        """GOAWAY, then close the transport; idempotent. Data already written is flushed
        by the transport; a client that does not read gets a short grace for each, no more."""
        if self._closed:
            return
        self._closed = True
        self._stop_accepting()
        goaway = control_frame(FrameType.GOAWAY, 0, TWO_U32.pack(self._last_stream_id, status))
        with contextlib.suppress(SpdyStreamClosed, TimeoutError):
            async with asyncio.timeout(_CLOSE_GRACE_S):
                await self._send(goaway)
        self._end()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(_CLOSE_GRACE_S):
                await self._transport.close()

    # -- reading ----------------------------------------------------------------------------

    async def _dispatch(self, frame: Frame) -> None:
        if not frame.control:
            await self._on_data(frame.kind, frame.flags, frame.payload)
            return
        if frame.version != VERSION:
            raise SpdyProtocolError(f"SPDY version {frame.version}, not {VERSION}")
        match frame.kind:
            case FrameType.SYN_STREAM:
                await self._on_syn_stream(frame.flags, frame.payload)
            case FrameType.SYN_REPLY:
                self._on_syn_reply(frame.payload)
            case FrameType.HEADERS:
                self._on_headers(frame.flags, frame.payload)
            case FrameType.RST_STREAM:
                self._on_rst_stream(frame.payload)
            case FrameType.SETTINGS:
                self._on_settings(frame.payload)
            case FrameType.PING:
                await self._on_ping(frame.payload)
            case FrameType.GOAWAY:
                _expect_length(frame, 8)
                self._stop_accepting()
            case FrameType.WINDOW_UPDATE:
                self._on_window_update(frame.payload)
            case _:
                pass  # SPDY/3: unknown control frames are ignored

    async def _on_syn_stream(self, flags: int, payload: bytes) -> None:
        if len(payload) < 10:
            raise SpdyProtocolError("SYN_STREAM shorter than 10 bytes")
        stream_id = U32.unpack_from(payload)[0] & 0x7FFF_FFFF
        # Inflate first, whatever becomes of the stream: the context spans all blocks.
        block = self._codec.inflate(payload[10:])
        if stream_id == 0:
            raise SpdyProtocolError("SYN_STREAM for stream 0")
        if stream_id in self._streams:
            raise StreamError(stream_id, RstStatus.PROTOCOL_ERROR)
        if stream_id <= self._last_stream_id:
            raise SpdyProtocolError(f"stream id {stream_id} after {self._last_stream_id}")
        self._last_stream_id = stream_id
        if stream_id % 2 == 0:
            raise StreamError(stream_id, RstStatus.PROTOCOL_ERROR)  # clients open odd ids
        if not self._accepting:
            return  # after GOAWAY new streams are ignored
        if len(self._streams) >= MAX_OPEN_STREAMS:
            raise StreamError(stream_id, RstStatus.REFUSED_STREAM)
        stream = SpdyStream(self, stream_id, parse_header_block(stream_id, block), flags)
        self._streams[stream_id] = stream
        self._incoming.put_nowait(stream)

    def _on_syn_reply(self, payload: bytes) -> None:
        stream_id = self._stream_id_of(payload, 4)
        self._codec.inflate(payload[4:])
        # We open no streams, so nothing can be replied to.
        raise StreamError(stream_id, RstStatus.PROTOCOL_ERROR)

    def _on_headers(self, flags: int, payload: bytes) -> None:
        stream_id = self._stream_id_of(payload, 4)
        headers = parse_header_block(stream_id, self._codec.inflate(payload[4:]))
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.headers.update(headers)
        if flags & FLAG_FIN:
            stream._peer_fin()

    def _on_rst_stream(self, payload: bytes) -> None:
        if len(payload) != 8:
            raise SpdyProtocolError("RST_STREAM not 8 bytes")
        stream_id = self._stream_id_of(payload, 8)
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.reset_status = U32.unpack_from(payload, 4)[0]
            stream._abort(reset=True)

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) < 4 or len(payload) != 4 + 8 * U32.unpack_from(payload)[0]:
            raise SpdyProtocolError("SETTINGS length does not match its entry count")
        for offset in range(4, len(payload), 8):
            flags_id, value = TWO_U32.unpack_from(payload, offset)
            if flags_id & 0xFF_FFFF != SETTINGS_INITIAL_WINDOW_SIZE:
                continue
            if value > MAX_WINDOW:
                raise SpdyProtocolError(f"initial window {value} over 2^31-1")
            delta = value - self._peer_initial_window
            self._peer_initial_window = value
            for stream in self._streams.values():
                stream._send_window += delta
            self._flow_control = True
            self._window_opened.set()

    async def _on_ping(self, payload: bytes) -> None:
        if len(payload) != 4:
            raise SpdyProtocolError("PING not 4 bytes")
        if U32.unpack_from(payload)[0] % 2 == 1:  # odd: the client's; even would answer ours
            await self._send(control_frame(FrameType.PING, 0, payload))

    def _on_window_update(self, payload: bytes) -> None:
        if len(payload) != 8:
            raise SpdyProtocolError("WINDOW_UPDATE not 8 bytes")
        stream_id, delta = (word & 0x7FFF_FFFF for word in TWO_U32.unpack(payload))
        self._flow_control = True
        if stream_id == 0:
            if delta == 0 or self._send_window + delta > MAX_WINDOW:
                raise SpdyProtocolError(f"session window update of {delta}")
            self._send_window += delta
        elif (stream := self._streams.get(stream_id)) is not None:
            if delta == 0 or stream._send_window + delta > MAX_WINDOW:
                raise StreamError(stream_id, RstStatus.FLOW_CONTROL_ERROR)
            stream._send_window += delta
        self._window_opened.set()

    async def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise SpdyProtocolError("DATA frame for stream 0")
        stream = self._streams.get(stream_id)
        if stream is None or stream.closed_by_peer:
            await self._consumed(None, len(payload))  # keep the session window honest
            if stream is not None:
                raise StreamError(stream_id, RstStatus.STREAM_ALREADY_CLOSED)
            if stream_id > self._last_stream_id:
                raise StreamError(stream_id, RstStatus.INVALID_STREAM)
            return  # a frame that crossed our RST_STREAM, or a stream already done
        if payload:
            # A client that ignores our window (client-go does) is held here instead.
            while (
                stream._buffered
                and stream._buffered + len(payload) > DEFAULT_WINDOW
                and not stream.aborted
            ):
                stream._drained.clear()
                await stream._drained.wait()
            if stream._reset:
                await self._consumed(None, len(payload))
                return
            stream._deliver(payload)
        if flags & FLAG_FIN:
            stream._peer_fin()

    def _stream_id_of(self, payload: bytes, minimum: int) -> int:
        if len(payload) < minimum:
            raise SpdyProtocolError(f"control frame shorter than {minimum} bytes")
        stream_id: int = U32.unpack_from(payload)[0] & 0x7FFF_FFFF
        if stream_id == 0:
            raise SpdyProtocolError("stream frame for stream 0")
        return stream_id

    def _stop_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self._incoming.put_nowait(None)

    def _end(self) -> None:
        if self._ended.is_set():
            return
        self._ended.set()
        self._stop_accepting()
        for stream in list(self._streams.values()):
            stream._abort(reset=False)
        self._window_opened.set()

    # -- stream bookkeeping -----------------------------------------------------------------

    def _forget(self, stream: SpdyStream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
        self._window_opened.set()  # a writer waiting for window must see the abort

    def _forget_if_done(self, stream: SpdyStream) -> None:
        if stream.closed_by_peer and stream._closed_by_us:
            self._forget(stream)

    # -- writing ----------------------------------------------------------------------------

    async def _consumed(self, stream: SpdyStream | None, size: int) -> None:
        """Give back window for size bytes read (or dropped), in half-window steps."""
        self._unacked += size
        if stream is not None and not stream.closed_by_peer and not stream.aborted:
            stream._unacked += size
            if stream._unacked >= DEFAULT_WINDOW // 2:
                delta, stream._unacked = stream._unacked, 0
                await self._send_window_update(stream.id, delta)
        if self._unacked >= DEFAULT_WINDOW // 2:
            delta, self._unacked = self._unacked, 0
            await self._send_window_update(0, delta)

    async def _send_window_update(self, stream_id: int, delta: int) -> None:
        await self._send(control_frame(FrameType.WINDOW_UPDATE, 0, TWO_U32.pack(stream_id, delta)))

    async def _reserve(self, stream: SpdyStream, wanted: int) -> int:
        """How much of wanted may go in the next frame, once there is window for any."""
        while self._flow_control and not stream.aborted:
            if stream._send_window > 0 and self._send_window > 0:
                wanted = min(wanted, stream._send_window, self._send_window)
                break
            self._window_opened.clear()
            await self._window_opened.wait()
        size = min(wanted, MAX_DATA_FRAME)
        stream._send_window -= size
        self._send_window -= size
        return size

    async def _send_data(self, stream: SpdyStream, flags: int, data: memoryview | bytes) -> None:
        async with self._write_lock:
            # Checked under the lock: no DATA may follow the RST_STREAM of a reset.
            if stream.aborted:
                raise SpdyStreamClosed(f"stream {stream.id} was reset or its connection ended")
            head = TWO_U32.pack(stream.id, flags << 24 | len(data))
            await self._write_locked(b"".join((head, data)))

    async def _send_headers(
        self, kind: FrameType, fin: bool, stream_id: int, headers: Mapping[str, str]
    ) -> None:
        async with self._write_lock:
            # Compressed under the lock so blocks reach the wire in compression order.
            block = self._codec.encode(headers)
            flags = FLAG_FIN if fin else 0
            await self._write_locked(control_frame(kind, flags, U32.pack(stream_id) + block))

    async def _send_rst(self, stream_id: int, status: RstStatus) -> None:
        await self._send(control_frame(FrameType.RST_STREAM, 0, TWO_U32.pack(stream_id, status)))

    async def _reset_stream(self, stream_id: int, status: RstStatus) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream._abort(reset=True)
        await self._send_rst(stream_id, status)

    async def _send(self, frame: bytes) -> None:
        async with self._write_lock:
            await self._write_locked(frame)

    async def _write_locked(self, frame: bytes) -> None:
        if self._ended.is_set():
            raise SpdyStreamClosed("the SPDY connection has ended")
        try:
            await self._transport.write(frame)
        except OSError as exc:  # ConnectionError included
            self._end()
            raise SpdyStreamClosed(f"the SPDY connection broke: {exc}") from exc


def _expect_length(frame: Frame, length: int) -> None:
    if len(frame.payload) != length:
        raise SpdyProtocolError(f"{FrameType(frame.kind).name} not {length} bytes")
