"""ttrpc over a real socketpair: frames, calls both ways, statuses, deadlines, and a peer that
goes away or sends garbage. Where the wire itself is the point, one end is a raw socket that
writes and reads frames by hand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from runtime.nri.proto import api_pb2, request_pb2
from runtime.nri.ttrpc import (
    HEADER_LENGTH,
    MAX_MESSAGE_LENGTH,
    FrameHeader,
    Handler,
    MessageType,
    StatusCode,
    TtrpcConnection,
    TtrpcConnectionClosed,
    TtrpcError,
    TtrpcProtocolError,
    decode_header,
    encode_frame,
)
from tests.waiting import wait_until_async

PLUGIN = api_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


# Fails a test after which the event loop saw an exception nobody handled.
pytestmark = pytest.mark.usefixtures("no_loop_errors")


async def socket_streams() -> tuple[Streams, Streams]:
    left, right = socket.socketpair()
    return await asyncio.open_unix_connection(sock=left), await asyncio.open_unix_connection(
        sock=right
    )


@contextlib.asynccontextmanager
async def connected(
    handlers: Mapping[tuple[str, str], Handler],
) -> AsyncIterator[tuple[TtrpcConnection, TtrpcConnection]]:
    """(caller, server): the second answers with handlers."""
    (caller_reader, caller_writer), (server_reader, server_writer) = await socket_streams()
    async with (
        TtrpcConnection(caller_reader, caller_writer, peer="server") as caller,
        TtrpcConnection(server_reader, server_writer, handlers, peer="caller") as server,
    ):
        async with asyncio.timeout(10):  # a hang fails the test instead of the whole run
            yield caller, server


@contextlib.asynccontextmanager
async def facing_a_raw_peer(
    handlers: Mapping[tuple[str, str], Handler] | None = None,
) -> AsyncIterator[tuple[TtrpcConnection, Streams]]:
    (reader, writer), raw = await socket_streams()
    try:
        async with TtrpcConnection(reader, writer, handlers, peer="raw") as conn:
            async with asyncio.timeout(10):
                yield conn, raw
    finally:
        raw[1].close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[FrameHeader, bytes]:
    header = decode_header(await reader.readexactly(HEADER_LENGTH))
    return header, await reader.readexactly(header.length)


def request_frame(
    stream_id: int, method: str, payload: bytes = b"", timeout_nano: int = 0
) -> bytes:
    request = request_pb2.Request(
        service=PLUGIN, method=method, payload=payload, timeout_nano=timeout_nano
    )
    return encode_frame(stream_id, MessageType.REQUEST, request.SerializeToString())


async def cancelled(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def answer_of(raw: Streams, frame: bytes) -> tuple[int, request_pb2.Response]:
    reader, writer = raw
    writer.write(frame)
    header, data = await read_frame(reader)
    assert header.message_type == MessageType.RESPONSE
    return header.stream_id, request_pb2.Response.FromString(data)


# -- frames -----------------------------------------------------------------------------------


def test_the_header_is_length_stream_type_flags_big_endian() -> None:
    frame = encode_frame(0x01020305, MessageType.RESPONSE, b"ab", flags=4)

    assert frame == b"\x00\x00\x00\x02" + b"\x01\x02\x03\x05" + b"\x02" + b"\x04" + b"ab"


@pytest.mark.parametrize("length", [0, 1, 1000, MAX_MESSAGE_LENGTH])
@pytest.mark.parametrize("message_type", list(MessageType))
def test_frames_round_trip(message_type: MessageType, length: int) -> None:
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)

    frame = encode_frame(7, message_type, data, flags=1)

    assert decode_header(frame[:HEADER_LENGTH]) == FrameHeader(length, 7, message_type, 1)
    assert frame[HEADER_LENGTH:] == data


def test_no_frame_over_4_mib_is_made() -> None:
    with pytest.raises(TtrpcError) as caught:
        encode_frame(1, MessageType.REQUEST, bytes(MAX_MESSAGE_LENGTH + 1))

    assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_a_header_announcing_over_4_mib_is_a_protocol_error() -> None:
    header = (MAX_MESSAGE_LENGTH + 1).to_bytes(4, "big") + b"\x00\x00\x00\x01\x01\x00"

    with pytest.raises(TtrpcProtocolError):
        decode_header(header)


# -- calls ------------------------------------------------------------------------------------


async def test_a_call_gets_its_answer() -> None:
    async def configure(payload: bytes) -> bytes:
        request = api_pb2.ConfigureRequest.FromString(payload)
        return api_pb2.ConfigureResponse(events=len(request.runtime_name)).SerializeToString()

    async with connected({(PLUGIN, "Configure"): configure}) as (caller, _):
        answer = await caller.call(
            PLUGIN,
            "Configure",
            api_pb2.ConfigureRequest(runtime_name="moorage").SerializeToString(),
        )

    assert api_pb2.ConfigureResponse.FromString(answer).events == len("moorage")


async def test_concurrent_calls_are_answered_out_of_order() -> None:
    release: dict[bytes, asyncio.Event] = {}

    async def held(payload: bytes) -> bytes:
        release[payload] = asyncio.Event()
        await release[payload].wait()
        return payload.upper()

    async with connected({(PLUGIN, "Synchronize"): held}) as (caller, _):
        calls = {
            p: asyncio.create_task(caller.call(PLUGIN, "Synchronize", p)) for p in (b"a", b"b")
        }
        assert await wait_until_async(lambda: len(release) == 2)

        release[b"b"].set()
        assert await calls[b"b"] == b"B"
        assert not calls[b"a"].done()
        release[b"a"].set()
        assert await calls[b"a"] == b"A"


async def test_each_end_calls_the_other_on_one_connection() -> None:
    (left_reader, left_writer), (right_reader, right_writer) = await socket_streams()

    async def shout(payload: bytes) -> bytes:
        return payload.upper()

    handlers: dict[tuple[str, str], Handler] = {(PLUGIN, "Shutdown"): shout}
    async with (
        TtrpcConnection(left_reader, left_writer, handlers) as left,
        TtrpcConnection(right_reader, right_writer, handlers) as right,
    ):
        answers = await asyncio.gather(
            left.call(PLUGIN, "Shutdown", b"from left"),
            right.call(PLUGIN, "Shutdown", b"from right"),
        )

    assert list(answers) == [b"FROM LEFT", b"FROM RIGHT"]


async def test_an_unknown_service_or_method_is_unimplemented() -> None:
    async def empty(payload: bytes) -> bytes:
        return b""

    async with connected({(PLUGIN, "Shutdown"): empty}) as (caller, _):
        with pytest.raises(TtrpcError) as no_service:
            await caller.call("nri.pkg.api.v1alpha1.Elsewhere", "Shutdown", b"")
        with pytest.raises(TtrpcError) as no_method:
            await caller.call(PLUGIN, "Reboot", b"")

    assert (no_service.value.code, no_service.value.message) == (
        StatusCode.UNIMPLEMENTED,
        "service nri.pkg.api.v1alpha1.Elsewhere",
    )
    assert (no_method.value.code, no_method.value.message) == (
        StatusCode.UNIMPLEMENTED,
        "method Reboot",
    )


async def test_a_failing_handler_answers_an_error_and_the_connection_keeps_serving() -> None:
    async def fails(payload: bytes) -> bytes:
        raise RuntimeError(f"cannot handle {payload.decode()}")

    async def refuses(payload: bytes) -> bytes:
        raise TtrpcError(StatusCode.FAILED_PRECONDITION, "not yet")

    async def empty(payload: bytes) -> bytes:
        return b"ok"

    handlers = {
        (PLUGIN, "CreateContainer"): fails,
        (PLUGIN, "StopContainer"): refuses,
        (PLUGIN, "Shutdown"): empty,
    }
    async with connected(handlers) as (caller, server):
        with pytest.raises(TtrpcError) as failed:
            await caller.call(PLUGIN, "CreateContainer", b"this")
        with pytest.raises(TtrpcError) as refused:
            await caller.call(PLUGIN, "StopContainer", b"")

        assert await caller.call(PLUGIN, "Shutdown", b"") == b"ok"
        assert not server.closed

    assert (failed.value.code, failed.value.message) == (StatusCode.UNKNOWN, "cannot handle this")
    assert (refused.value.code, refused.value.message) == (
        StatusCode.FAILED_PRECONDITION,
        "not yet",
    )


async def test_an_answer_over_4_mib_is_resource_exhausted() -> None:
    async def huge(payload: bytes) -> bytes:
        return bytes(MAX_MESSAGE_LENGTH)

    async with connected({(PLUGIN, "Synchronize"): huge}) as (caller, server):
        with pytest.raises(TtrpcError) as caught:
            await caller.call(PLUGIN, "Synchronize", b"")

        assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED
        assert not server.closed


async def test_a_call_times_out_and_its_late_answer_is_dropped() -> None:
    handler_gave_up = asyncio.Event()

    async def never(payload: bytes) -> bytes:
        try:
            await asyncio.Event().wait()
        finally:
            handler_gave_up.set()
        return b""

    async def echo(payload: bytes) -> bytes:
        return payload

    async with connected({(PLUGIN, "Synchronize"): never, (PLUGIN, "Shutdown"): echo}) as (
        caller,
        _,
    ):
        with pytest.raises(TimeoutError, match=r"Synchronize to server: no answer within 0.05s"):
            await caller.call(PLUGIN, "Synchronize", b"", timeout_s=0.05)
        # Told the deadline, the server gives up too and answers for a call no longer waiting.
        await handler_gave_up.wait()

        assert await caller.call(PLUGIN, "Shutdown", b"still here") == b"still here"


async def test_a_handler_past_the_callers_deadline_answers_deadline_exceeded() -> None:
    async def never(payload: bytes) -> bytes:
        await asyncio.Event().wait()
        return b""

    async with facing_a_raw_peer({(PLUGIN, "Synchronize"): never}) as (_, raw):
        stream_id, response = await answer_of(
            raw, request_frame(1, "Synchronize", timeout_nano=10_000_000)
        )

    assert (stream_id, response.status.code) == (1, StatusCode.DEADLINE_EXCEEDED)


async def test_a_call_tells_the_peer_its_deadline() -> None:
    async with facing_a_raw_peer() as (conn, (reader, _)):
        call = asyncio.create_task(conn.call(PLUGIN, "Synchronize", b"x", timeout_s=5))
        header, data = await read_frame(reader)
        await cancelled(call)

    request = request_pb2.Request.FromString(data)
    assert (header.stream_id, header.message_type, header.flags) == (1, MessageType.REQUEST, 0)
    assert (request.service, request.method, request.payload) == (PLUGIN, "Synchronize", b"x")
    assert request.timeout_nano == 5_000_000_000


async def test_calls_take_increasing_odd_stream_ids() -> None:
    async with facing_a_raw_peer() as (conn, (reader, _)):
        calls = [asyncio.create_task(conn.call(PLUGIN, "Shutdown", b"")) for _ in range(3)]
        ids = [(await read_frame(reader))[0].stream_id for _ in calls]
        await cancelled(*calls)

    assert ids == [1, 3, 5]


async def test_even_or_reused_stream_ids_are_refused() -> None:
    async def empty(payload: bytes) -> bytes:
        return b"ok"

    async with facing_a_raw_peer({(PLUGIN, "Shutdown"): empty}) as (conn, raw):
        even = await answer_of(raw, request_frame(2, "Shutdown"))
        fine = await answer_of(raw, request_frame(3, "Shutdown"))
        reused = await answer_of(raw, request_frame(3, "Shutdown"))
        assert not conn.closed

    assert (even[0], even[1].status.code) == (2, StatusCode.INVALID_ARGUMENT)
    assert (fine[0], fine[1].status.code, fine[1].payload) == (3, StatusCode.OK, b"ok")
    assert (reused[0], reused[1].status.code) == (3, StatusCode.INVALID_ARGUMENT)


# -- the end of a connection ------------------------------------------------------------------


async def test_the_peer_going_away_fails_the_calls_waiting() -> None:
    async with facing_a_raw_peer() as (conn, (reader, writer)):
        call = asyncio.create_task(conn.call(PLUGIN, "Synchronize", b""))
        await read_frame(reader)
        writer.close()

        with pytest.raises(TtrpcConnectionClosed):
            await call
        await conn.wait_closed()
        assert conn.error is None
        with pytest.raises(TtrpcConnectionClosed):
            await conn.call(PLUGIN, "Synchronize", b"")


async def test_closing_fails_the_calls_waiting_and_ends_the_stream() -> None:
    async with facing_a_raw_peer() as (conn, (reader, _)):
        call = asyncio.create_task(conn.call(PLUGIN, "Synchronize", b""))
        await read_frame(reader)

        await conn.close()

        with pytest.raises(TtrpcConnectionClosed):
            await call
        assert await reader.read() == b""


GARBAGE = [
    pytest.param(b"\xff" * HEADER_LENGTH, id="oversized-length"),
    pytest.param(encode_frame(1, MessageType.REQUEST, b"\xff\xff\xff"), id="undecodable-request"),
    pytest.param(encode_frame(1, MessageType.RESPONSE, b"\x0a\x05ab"), id="undecodable-response"),
    pytest.param(encode_frame(1, MessageType.REQUEST, b"abc")[:-1], id="cut-short"),
]


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_garbage_closes_the_connection_and_is_reported(garbage: bytes) -> None:
    async with facing_a_raw_peer() as (conn, (reader, writer)):
        call = asyncio.create_task(conn.call(PLUGIN, "Synchronize", b""))
        await read_frame(reader)

        writer.write(garbage)
        writer.write_eof()  # what ends a frame cut short
        await conn.wait_closed()

        assert isinstance(conn.error, TtrpcProtocolError)
        with pytest.raises(TtrpcConnectionClosed, match="is closed: "):
            await call
        assert await reader.read() == b""
