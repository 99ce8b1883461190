"""SPDY/3.1 on the wire: frame types and limits, the header-block codec (one zlib stream per
direction, seeded with the SPDY/3 dictionary) and the frame reader. spdy.py builds the
session on these."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from cri.streaming.transport import ByteTransport

PROTOCOL = "SPDY/3.1"  # the HTTP Upgrade token
VERSION = 3  # SPDY/3.1 frames carry version 3

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 2**31 - 1

# DATA frames are capped by their 24-bit length (16 MiB); control frames carry at most a
# compressed header block, which client-go keeps under a kilobyte.
MAX_CONTROL_FRAME = 1024 * 1024
MAX_HEADER_BLOCK = 256 * 1024  # decompressed
MAX_OPEN_STREAMS = 1024
# Big enough for throughput, small enough that one stream does not hog the connection.
MAX_DATA_FRAME = 64 * 1024
_READ_SIZE = 256 * 1024


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SpdyProtocolError(Exception):
    """The peer broke the protocol: the session sent GOAWAY and closed the connection."""


class SpdyStreamClosed(ConnectionError):
    """Writing to a stream that was reset, that we closed, or whose connection is gone."""


class StreamError(Exception):
    def __init__(self, stream_id: int, status: RstStatus) -> None:
        super().__init__(f"stream {stream_id}: {status.name}")
        self.stream_id = stream_id
        self.status = status


U32 = struct.Struct(">I")
TWO_U32 = struct.Struct(">II")
CONTROL_HEAD = struct.Struct(">HHI")

_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)  # fmt: skip
_DICTIONARY_TAIL = (
    b"100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    b"502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    b"400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    b"501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    b"Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    b"image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    b"publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# The SPDY/3 header compression dictionary: length-prefixed words, then a plain tail.
DICTIONARY = b"".join(U32.pack(len(w)) + w.encode() for w in _DICTIONARY_WORDS) + _DICTIONARY_TAIL


def control_frame(kind: FrameType, flags: int, payload: bytes) -> bytes:
    return CONTROL_HEAD.pack(0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload


class HeaderCodec:
    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: Mapping[str, str]) -> bytes:
        parts = [U32.pack(len(headers))]
        for name, value in headers.items():
            raw_name, raw_value = name.lower().encode("latin-1"), value.encode("latin-1")
            parts += (U32.pack(len(raw_name)), raw_name, U32.pack(len(raw_value)), raw_value)
        return self._deflate.compress(b"".join(parts)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def inflate(self, compressed: bytes) -> bytes:
        """The raw block; any failure here desynchronises the shared context for good."""
        try:
            block = self._inflate.decompress(compressed, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block does not decompress: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise SpdyProtocolError(f"header block over {MAX_HEADER_BLOCK} bytes")
        return block


def parse_header_block(stream_id: int, block: bytes) -> dict[str, str]:
    """Names must be lowercase and unique; a value keeps its NUL-separated parts as sent."""
    malformed = StreamError(stream_id, RstStatus.PROTOCOL_ERROR)
    if len(block) < 4:
        raise malformed
    (count,) = U32.unpack_from(block)
    if count > len(block) // 8:
        raise malformed
    headers: dict[str, str] = {}
    pos = 4
    for _ in range(count):
        fields = []
        for _part in range(2):
            if pos + 4 > len(block):
                raise malformed
            (size,) = U32.unpack_from(block, pos)
            pos += 4 + size
            if pos > len(block):
                raise malformed
            fields.append(block[pos - size : pos].decode("latin-1"))
        name, value = fields
        if not name or name != name.lower() or name in headers:
            raise malformed
        headers[name] = value
    if pos != len(block):
        raise malformed
    return headers


@dataclass(frozen=True, slots=True)
class Frame:
    control: bool
    kind: int  # a control frame's type; a DATA frame's stream id
    version: int
    flags: int
    payload: bytes


class FrameReader:
    def __init__(self, transport: ByteTransport) -> None:
        self._transport = transport
        self._buffer = bytearray()

    async def next(self) -> Frame | None:
        """The next whole frame; None at the end of the connection."""
        if not await self._fill(8):
            return None
        word, flags_length = TWO_U32.unpack_from(self._buffer)
        control = bool(word & 0x8000_0000)
        end = 8 + (flags_length & 0xFF_FFFF)
        if control and end - 8 > MAX_CONTROL_FRAME:
            raise SpdyProtocolError(f"control frame of {end - 8} bytes")
        if not await self._fill(end):
            return None
        with memoryview(self._buffer) as view:
            payload = view[8:end].tobytes()
        del self._buffer[:end]
        if control:
            return Frame(True, word & 0xFFFF, (word >> 16) & 0x7FFF, flags_length >> 24, payload)
        return Frame(False, word, VERSION, flags_length >> 24, payload)

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            try:
                chunk = await self._transport.read(max(_READ_SIZE, size - len(self._buffer)))
            except OSError:
                return False
            if not chunk:
                return False
            self._buffer += chunk
        return True
