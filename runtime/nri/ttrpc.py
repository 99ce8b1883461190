"""ttrpc, containerd's small gRPC-like protocol, as NRI uses it: unary calls in both
directions over one byte stream.

Every message is a frame: a 10-byte header (big-endian data length and stream id, a message
type, flags) and at most 4 MiB of data. A call is a Request on a stream id its caller picks
(odd, increasing) and the Response the peer sends back on the same id, so calls on one
connection overlap and are answered in any order. Streaming (Data messages) is not used by
NRI and not spoken here. Status codes are gRPC's.

Anything that breaks the framing (an oversized length, a Request or Response protobuf cannot
decode) ends the connection: its bytes cannot be trusted any more. That is logged, kept in
`TtrpcConnection.error`, and every call still waiting fails with TtrpcConnectionClosed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

import structlog
from google.protobuf.message import DecodeError

from runtime.nri.proto import request_pb2, status_pb2
from runtime.nri.streams import ByteReader, ByteWriter

log = structlog.get_logger("moorage.nri")

HEADER = struct.Struct(">IIBB")
HEADER_LENGTH = HEADER.size
MAX_MESSAGE_LENGTH = 4 << 20
# A peer that stops reading must not hold close() for ever.
_CLOSE_GRACE_S = 2.0


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class StatusCode(enum.IntEnum):
    """gRPC's status codes, which ttrpc's google.rpc.Status carries."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """A call answered with a status other than OK. Handlers raise it to answer with a
    status of their choice."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class TtrpcConnectionClosed(ConnectionError):
    """The connection ended before the call was answered, or was already closed."""


class TtrpcProtocolError(Exception):
    """The peer sent something that is not ttrpc; the connection cannot go on."""


@dataclass(frozen=True)
class FrameHeader:
    length: int
    stream_id: int
    # Raw, not a MessageType: types from newer peers are legal and ignored.
    message_type: int
    flags: int


def encode_frame(stream_id: int, message_type: MessageType, data: bytes, flags: int = 0) -> bytes:
    if len(data) > MAX_MESSAGE_LENGTH:
        raise TtrpcError(
            StatusCode.RESOURCE_EXHAUSTED,
            f"message length {len(data)} exceeds the maximum of {MAX_MESSAGE_LENGTH}",
        )
    return HEADER.pack(len(data), stream_id, message_type, flags) + data


def decode_header(header: bytes) -> FrameHeader:
    length, stream_id, message_type, flags = HEADER.unpack(header)
    if length > MAX_MESSAGE_LENGTH:
        raise TtrpcProtocolError(
            f"frame of {length} bytes on stream {stream_id}: the maximum is {MAX_MESSAGE_LENGTH}"
        )
    return FrameHeader(length, stream_id, message_type, flags)


def decode_request(data: bytes) -> request_pb2.Request:
    try:
        return request_pb2.Request.FromString(data)
    except DecodeError as exc:
        raise TtrpcProtocolError(f"undecodable Request: {exc}") from exc


def decode_response(data: bytes) -> request_pb2.Response:
    try:
        return request_pb2.Response.FromString(data)
    except DecodeError as exc:
        raise TtrpcProtocolError(f"undecodable Response: {exc}") from exc


def status_code(value: int) -> StatusCode:
    """The code a peer sent; one gRPC does not define counts as UNKNOWN, as in gRPC."""
    try:
        return StatusCode(value)
    except ValueError:
        return StatusCode.UNKNOWN


Handler = Callable[[bytes], Awaitable[bytes]]


class TtrpcConnection:
    """Both ends of ttrpc over one byte stream: `call()` the peer's services, and answer the
    peer's calls with `handlers`, keyed by (fully qualified service name, method name).

    Use it as an async context manager, or `start()` it and `close()` it. It ends when the
    peer goes, breaks the protocol, or close() is called; `wait_closed()` waits for that.
    """

    def __init__(
        self,
        reader: ByteReader,
        writer: ByteWriter,
        handlers: Mapping[tuple[str, str], Handler] | None = None,
        *,
        peer: str = "peer",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handlers = dict(handlers or {})
        self._services = {service for service, _ in self._handlers}
        self._peer = peer
        self._next_stream_id = 1
        self._last_peer_stream_id = 0
        self._waiting: dict[int, asyncio.Future[request_pb2.Response]] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self._read_task: asyncio.Task[None] | None = None
        self._ended = False
        self._closed = asyncio.Event()
        self.error: Exception | None = None
        """Why the connection ended, unless the peer or close() ended it in an orderly way."""

    async def __aenter__(self) -> TtrpcConnection:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """No more calls either way (the connection may still be shutting down)."""
        return self._ended

    def start(self) -> None:
        """Start reading the peer's messages: its calls and the answers to ours."""
        if self._read_task is None and not self.closed:
            self._read_task = asyncio.create_task(self._read_messages())

    async def call(
        self, service: str, method: str, payload: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """The payload of the peer's answer. Raises TtrpcError for a status other than OK,
        TimeoutError when timeout_s passes first (the peer is told the deadline too), and
        TtrpcConnectionClosed when the connection ends first."""
        if self.closed:
            raise TtrpcConnectionClosed(self._closed_reason())
        request = request_pb2.Request(service=service, method=method, payload=payload)
        if timeout_s is not None:
            request.timeout_nano = int(timeout_s * 1e9)
        # Ids go on the wire in the order they are taken: nothing awaits in between.
        stream_id = self._next_stream_id
        frame = encode_frame(stream_id, MessageType.REQUEST, request.SerializeToString())
        self._next_stream_id += 2
        answer: asyncio.Future[request_pb2.Response] = asyncio.get_running_loop().create_future()
        self._waiting[stream_id] = answer
        try:
            async with asyncio.timeout(timeout_s):
                await self._send(frame)
                response = await answer
        except TimeoutError:
            raise TimeoutError(
                f"ttrpc {service}/{method} to {self._peer}: no answer within {timeout_s}s"
            ) from None
        finally:
            # An answer that comes after this is for nobody and dropped.
            self._waiting.pop(stream_id, None)
        if response.status.code != StatusCode.OK:
            raise TtrpcError(status_code(response.status.code), response.status.message)
        return response.payload

    async def close(self) -> None:
        """End the connection and wait until it is shut down; idempotent. Calls still
        waiting fail, answers being worked out are abandoned."""
        await self._end(None)

    async def wait_closed(self) -> None:
        """Wait until the connection has ended and is shut down, whoever ended it."""
        await self._closed.wait()

    # -- reading ----------------------------------------------------------------------------

    async def _read_messages(self) -> None:
        error: Exception | None = None
        try:
            while True:
                header = decode_header(await self._reader.readexactly(HEADER_LENGTH))
                data = await self._reader.readexactly(header.length)
                self._dispatch(header, data)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                error = TtrpcProtocolError("the stream ended inside a frame")
        except TtrpcProtocolError as exc:
            error = exc
        except ConnectionError as exc:
            error = exc
        await self._end(error)

    def _dispatch(self, header: FrameHeader, data: bytes) -> None:
        match header.message_type:
            case MessageType.RESPONSE:
                response = decode_response(data)
                answer = self._waiting.get(header.stream_id)
                if answer is None or answer.done():
                    log.debug(
                        "ttrpc answer dropped: its call gave up",
                        peer=self._peer,
                        stream=header.stream_id,
                    )
                else:
                    answer.set_result(response)
            case MessageType.REQUEST:
                request = decode_request(data)
                refusal = self._refuse_stream_id(header.stream_id)
                task = asyncio.create_task(self._answer(header.stream_id, request, refusal))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)
            case _:
                # Streams (Data) are not used by NRI; upstream ignores unknown types too.
                log.debug(
                    "ttrpc message ignored",
                    peer=self._peer,
                    type=header.message_type,
                    stream=header.stream_id,
                )

    # -- answering --------------------------------------------------------------------------

    def _refuse_stream_id(self, stream_id: int) -> TtrpcError | None:
        # As upstream: a caller's ids are odd and increase, so no answer is ambiguous.
        if stream_id % 2 != 1:
            return TtrpcError(
                StatusCode.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"
            )
        if stream_id <= self._last_peer_stream_id:
            return TtrpcError(
                StatusCode.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"
            )
        self._last_peer_stream_id = stream_id
        return None

    async def _answer(
        self, stream_id: int, request: request_pb2.Request, refusal: TtrpcError | None
    ) -> None:
        try:
            if refusal is not None:
                raise refusal
            payload = await self._handle(request)
            frame = self._response_frame(stream_id, status_pb2.Status(), payload)
        except TtrpcError as exc:
            frame = self._response_frame(
                stream_id, status_pb2.Status(code=exc.code, message=exc.message), b""
            )
        await self._send_answer(frame, request)

    async def _handle(self, request: request_pb2.Request) -> bytes:
        handler = self._handlers.get((request.service, request.method))
        if handler is None:
            if request.service not in self._services:
                raise TtrpcError(StatusCode.UNIMPLEMENTED, f"service {request.service}")
            raise TtrpcError(StatusCode.UNIMPLEMENTED, f"method {request.method}")
        deadline_s = request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        try:
            async with asyncio.timeout(deadline_s) as deadline:
                return await handler(request.payload)
        except TtrpcError:
            raise
        except TimeoutError as exc:
            if deadline.expired():
                raise TtrpcError(
                    StatusCode.DEADLINE_EXCEEDED, f"{request.method}: the caller's deadline passed"
                ) from exc
            raise self._failed(request, exc) from exc
        except Exception as exc:
            raise self._failed(request, exc) from exc

    def _failed(self, request: request_pb2.Request, exc: Exception) -> TtrpcError:
        log.warning(
            "ttrpc handler failed",
            peer=self._peer,
            service=request.service,
            method=request.method,
            exc_info=exc,
        )
        return TtrpcError(StatusCode.UNKNOWN, str(exc) or type(exc).__name__)

    @staticmethod
    def _response_frame(stream_id: int, status: status_pb2.Status, payload: bytes) -> bytes:
        response = request_pb2.Response(status=status, payload=payload)
        try:
            return encode_frame(stream_id, MessageType.RESPONSE, response.SerializeToString())
        except TtrpcError as exc:
            failed = request_pb2.Response(
                status=status_pb2.Status(code=exc.code, message=exc.message)
            )
            return encode_frame(stream_id, MessageType.RESPONSE, failed.SerializeToString())

    async def _send_answer(self, frame: bytes, request: request_pb2.Request) -> None:
        try:
            await self._send(frame)
        except TtrpcConnectionClosed:
            log.debug(
                "ttrpc answer unsent: the connection ended",
                peer=self._peer,
                service=request.service,
                method=request.method,
            )

    # -- both ---------------------------------------------------------------------------------

    async def _send(self, frame: bytes) -> None:
        if self.closed:
            raise TtrpcConnectionClosed(self._closed_reason())
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except ConnectionError as exc:
            raise TtrpcConnectionClosed(f"ttrpc connection to {self._peer}: {exc}") from exc

    def _closed_reason(self) -> str:
        why = f": {self.error}" if self.error else ""
        return f"ttrpc connection to {self._peer} is closed{why}"

    async def _end(self, error: Exception | None) -> None:
        if self._ended:
            await self._closed.wait()
            return
        self._ended = True
        self.error = error
        if error is not None:
            log.warning("ttrpc connection failed", peer=self._peer, error=str(error))
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(TtrpcConnectionClosed(self._closed_reason()))
        current = asyncio.current_task()
        tasks = [t for t in (self._read_task, *self._answering) if t and t is not current]
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
            self._writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await self._writer.wait_closed()
        finally:
            self._closed.set()
