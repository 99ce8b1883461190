"""SPDY/3.1 sessions against the independent test client, over an in-memory connection."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib

import pytest

from cri.streaming.spdy_frames import (
    DICTIONARY,
    MAX_DATA_FRAME,
    MAX_OPEN_STREAMS,
    GoAwayStatus,
    RstStatus,
    SpdyProtocolError,
    SpdyStreamClosed,
    StreamError,
    parse_header_block,
)
from tests.streaming.spdy_client import (
    FIN,
    GOAWAY,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    SYN_REPLY,
    SYN_STREAM,
    WINDOW,
    WINDOW_UPDATE,
    ZLIB_DICTIONARY,
    control_frame,
    data_frame,
)
from tests.streaming.spdy_pair import connected, open_accepted

# sha256 of the 1423-byte dictionary in the SPDY/3 draft (and in Go's spdy package).
SPDY3_DICTIONARY_SHA256 = "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_dictionary_is_the_spdy3_one() -> None:
    for dictionary in (DICTIONARY, ZLIB_DICTIONARY):
        assert len(dictionary) == 1423
        assert hashlib.sha256(dictionary).hexdigest() == SPDY3_DICTIONARY_SHA256


def _block(*fields: bytes, count: int | None = None) -> bytes:
    pairs = len(fields) // 2 if count is None else count
    return struct.pack(">I", pairs) + b"".join(struct.pack(">I", len(f)) + f for f in fields)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b"", id="empty"),
        pytest.param(_block(b"a", b"1", count=2), id="count-too-high"),
        pytest.param(_block(b"a", b"1") + b"extra", id="trailing-bytes"),
        pytest.param(_block(b"a", b"1")[:-1], id="truncated"),
        pytest.param(_block(b"", b"1"), id="empty-name"),
        pytest.param(_block(b"Name", b"1"), id="uppercase-name"),
        pytest.param(_block(b"a", b"1", b"a", b"2"), id="duplicate-name"),
    ],
)
def test_malformed_header_blocks_are_stream_errors(block: bytes) -> None:
    with pytest.raises(StreamError) as caught:
        parse_header_block(3, block)
    assert (caught.value.stream_id, caught.value.status) == (3, RstStatus.PROTOCOL_ERROR)


def test_header_values_keep_their_nul_separated_parts() -> None:
    assert parse_header_block(1, _block(b"a", b"1\x002", b"b", b"")) == {"a": "1\x002", "b": ""}


async def test_header_blocks_share_one_context_per_direction() -> None:
    async with connected() as conn:
        for i in range(5):
            client_stream = await conn.client.open_stream(
                {"streamtype": "data", "port": "80", "requestid": str(i)}
            )
            stream = await conn.session.accept()
            assert stream is not None
            assert stream.id == client_stream.id == 2 * i + 1
            assert stream.headers == {"streamtype": "data", "port": "80", "requestid": str(i)}
            await stream.reply({"X-Reply": f"r{i}", "streamtype": "data"})
            assert await client_stream.wait_reply() == {"x-reply": f"r{i}", "streamtype": "data"}


async def test_data_and_fin_both_ways() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        await client_stream.write(b"hello ")
        await client_stream.write(b"world")
        await client_stream.close()
        received = b""
        while chunk := await stream.read():
            received += chunk
        assert received == b"hello world"
        assert stream.closed_by_peer
        await stream.write(b"bye")
        await stream.close()
        await stream.close()  # idempotent
        assert await client_stream.read_all() == b"bye"
        assert not stream.aborted


async def test_more_than_a_window_both_ways_at_once() -> None:
    upload, download = bytes(range(256)) * 4096, bytes(reversed(range(256))) * 5000
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)

        async def server_sends() -> None:
            await stream.write(download)
            await stream.close()

        async def server_receives() -> bytes:
            parts = []
            while chunk := await stream.read():
                parts.append(chunk)
            return b"".join(parts)

        async def client_sends() -> None:
            await client_stream.write(upload)
            await client_stream.close()

        _, got_upload, _, got_download = await asyncio.gather(
            server_sends(), server_receives(), client_sends(), client_stream.read_all()
        )
        assert got_upload == upload
        assert got_download == download
        updates = conn.client.window_updates_received
        assert sum(d for sid, d in updates if sid == client_stream.id) >= len(upload) - WINDOW
        assert sum(d for sid, d in updates if sid == 0) >= len(upload) - WINDOW


async def test_writer_waits_for_window_rather_than_buffering() -> None:
    async with connected(window_updates=False) as conn:
        stream, client_stream = await open_accepted(conn)
        writer = asyncio.create_task(stream.write(b"x" * (4 * WINDOW)))
        await client_stream.wait_received(WINDOW)
        await conn.client.ping()  # the server has run since, and could not send more
        assert not writer.done()
        assert client_stream.received == WINDOW
        assert conn.server_side.outgoing.written < WINDOW + 4096

        await conn.client.window_update(client_stream.id, 4 * WINDOW)
        await conn.client.ping()
        assert not writer.done(), "the session window is still exhausted"

        await conn.client.window_update(0, 4 * WINDOW)
        await writer
        await client_stream.wait_received(4 * WINDOW)
        assert client_stream.received == 4 * WINDOW


async def test_settings_initial_window_applies_to_streams() -> None:
    async with connected(window_updates=False) as conn:
        stream, client_stream = await open_accepted(conn)
        entry = struct.pack(">II", 7, 1000)
        await conn.client.send_raw(control_frame(SETTINGS, 0, struct.pack(">I", 1) + entry))
        await conn.client.ping()
        writer = asyncio.create_task(stream.write(b"y" * 5000))
        await client_stream.wait_received(1000)
        await conn.client.ping()
        assert client_stream.received == 1000
        await conn.client.window_update(client_stream.id, 4000)
        await writer
        await client_stream.wait_received(5000)


async def test_a_peer_without_flow_control_is_not_held_to_the_window() -> None:
    """client-go neither sends nor heeds WINDOW_UPDATE: it must still get everything."""
    payload = b"z" * (8 * WINDOW)
    async with connected(flow_control=False) as conn:
        stream, client_stream = await open_accepted(conn)
        await stream.write(payload)
        await stream.close()
        assert await client_stream.read_all() == payload
        await client_stream.write(payload)
        await client_stream.close()
        received = bytearray()
        while chunk := await stream.read():
            received += chunk
        assert received == payload


async def test_unread_data_stops_the_reading_not_the_memory() -> None:
    async with connected(flow_control=False, capacity=WINDOW) as conn:
        stream, client_stream = await open_accepted(conn)
        writer = asyncio.create_task(client_stream.write(b"u" * (64 * WINDOW)))
        await conn.server_side.incoming.stalled.wait()
        assert stream._buffered <= WINDOW + MAX_DATA_FRAME
        assert not writer.done()
        total = 0
        while total < 64 * WINDOW:
            total += len(await stream.read())
        await writer


async def test_a_client_that_stops_reading_holds_our_writes() -> None:
    capacity = 4 * WINDOW
    async with connected(flow_control=False, capacity=capacity, start_client=False) as conn:
        await conn.client.open_stream({"streamtype": "data"})
        stream = await conn.session.accept()
        assert stream is not None
        await stream.reply()
        writer = asyncio.create_task(stream.write(b"w" * (64 * capacity)))
        await conn.server_side.outgoing.stalled.wait()
        assert conn.server_side.outgoing.buffered <= capacity + MAX_DATA_FRAME + 8
        assert not writer.done()
        await conn.client.close()
        with pytest.raises(SpdyStreamClosed):
            await writer


async def test_ping_is_echoed() -> None:
    async with connected() as conn:
        await conn.client.ping()
        await conn.client.ping()


async def test_unknown_control_frames_are_ignored() -> None:
    async with connected() as conn:
        await conn.client.send_raw(control_frame(10, 0, b"credential"))
        await conn.client.ping()


async def test_data_for_a_stream_never_opened_is_refused() -> None:
    async with connected() as conn:
        await conn.client.send_raw(data_frame(99, 0, b"x"))
        assert await conn.client.wait_reset(99) == RstStatus.INVALID_STREAM
        await conn.client.ping()


async def test_data_after_the_client_fin_resets_the_stream() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        await client_stream.close()
        assert await stream.read() == b""
        await conn.client.send_raw(data_frame(client_stream.id, 0, b"late"))
        assert await conn.client.wait_reset(client_stream.id) == RstStatus.STREAM_ALREADY_CLOSED
        assert stream.aborted
        with pytest.raises(SpdyStreamClosed):
            await stream.write(b"x")


async def test_bad_streams_are_reset_and_the_session_goes_on() -> None:
    async with connected() as conn:
        await open_accepted(conn)
        await conn.client.send_syn_stream(4, {"streamtype": "data"})  # even: server ids
        assert await conn.client.wait_reset(4) == RstStatus.PROTOCOL_ERROR
        await conn.client.send_syn_stream(5, {"StreamType": "data"})  # not lowercase
        assert await conn.client.wait_reset(5) == RstStatus.PROTOCOL_ERROR
        stream, client_stream = await open_accepted(conn)
        assert stream.id == 7
        await stream.write(b"still fine")
        await stream.close()
        assert await client_stream.read_all() == b"still fine"


async def test_headers_frames_add_headers_and_may_end_the_stream() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        head = struct.pack(">I", client_stream.id)
        await conn.client.send_header_frame(HEADERS, head, {"trailer": "yes"}, flags=FIN)
        assert await stream.read() == b""
        assert stream.headers == {"streamtype": "data", "trailer": "yes"}


async def test_a_syn_reply_from_the_client_resets_its_stream() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        head = struct.pack(">I", client_stream.id)
        await conn.client.send_header_frame(SYN_REPLY, head, {"status": "200"})
        assert await conn.client.wait_reset(client_stream.id) == RstStatus.PROTOCOL_ERROR
        assert stream.aborted
        await open_accepted(conn, {"streamtype": "after"})  # the zlib context is intact


async def test_a_window_past_2_31_resets_the_stream() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        await conn.client.window_update(client_stream.id, 2**31 - 1)
        assert await conn.client.wait_reset(client_stream.id) == RstStatus.FLOW_CONTROL_ERROR
        assert stream.aborted


async def test_too_many_open_streams_are_refused() -> None:
    async with connected() as conn:
        for _ in range(MAX_OPEN_STREAMS):
            await conn.client.open_stream({"streamtype": "data"})
        refused = await conn.client.open_stream({"streamtype": "data"})
        assert await conn.client.wait_reset(refused.id) == RstStatus.REFUSED_STREAM


async def test_reset_by_the_client() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        await client_stream.reset(RstStatus.CANCEL)
        await stream.wait_aborted()
        assert stream.reset_status == RstStatus.CANCEL
        assert await stream.read() == b""
        with pytest.raises(SpdyStreamClosed):
            await stream.write(b"x")
        await stream.close()  # quiet


async def test_reset_by_the_server() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        await stream.reset()
        assert await conn.client.wait_reset(client_stream.id) == RstStatus.CANCEL
        assert stream.aborted


async def test_write_before_reply_is_a_bug() -> None:
    async with connected() as conn:
        await conn.client.open_stream({"streamtype": "data"})
        stream = await conn.session.accept()
        assert stream is not None
        with pytest.raises(RuntimeError):
            await stream.write(b"x")
        await stream.reply()
        with pytest.raises(RuntimeError):
            await stream.reply()


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(control_frame(PING, 0, struct.pack(">I", 1), version=2), id="version-2"),
        pytest.param(struct.pack(">HHI", 0x8003, SYN_STREAM, 2 << 20), id="oversized-control"),
        pytest.param(
            control_frame(SYN_STREAM, 0, struct.pack(">IIBB", 1, 0, 0, 0) + b"not zlib"),
            id="header-block-not-zlib",
        ),
        pytest.param(control_frame(PING, 0, b"12345"), id="ping-length"),
        pytest.param(control_frame(SETTINGS, 0, struct.pack(">I", 3)), id="settings-count"),
        pytest.param(data_frame(0, 0, b"x"), id="data-stream-0"),
        pytest.param(control_frame(RST_STREAM, 0, struct.pack(">I", 1)), id="rst-length"),
        pytest.param(control_frame(GOAWAY, 0, b""), id="goaway-length"),
        pytest.param(
            control_frame(WINDOW_UPDATE, 0, struct.pack(">II", 0, 2**31 - 1)),
            id="session-window-overflow",
        ),
        pytest.param(
            control_frame(SETTINGS, 0, struct.pack(">III", 1, 7, 2**31)), id="settings-window"
        ),
    ],
)
async def test_malformed_frames_end_the_session_with_goaway(frame: bytes) -> None:
    async with connected() as conn:
        await conn.client.send_raw(frame)
        with pytest.raises(SpdyProtocolError):
            await conn.runner
        assert (await conn.client.wait_goaway())[1] == GoAwayStatus.PROTOCOL_ERROR
        await conn.client.wait_disconnected()
        assert conn.session.ended


async def test_a_header_block_too_big_once_inflated_ends_the_session() -> None:
    raw = struct.pack(">II", 1, 4) + b"name" + struct.pack(">I", 1 << 20) + b"a" * (1 << 20)
    deflate = zlib.compressobj(zdict=ZLIB_DICTIONARY)
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    async with connected() as conn:
        syn = control_frame(SYN_STREAM, 0, struct.pack(">IIBB", 1, 0, 0, 0) + block)
        await conn.client.send_raw(syn)
        with pytest.raises(SpdyProtocolError):
            await conn.runner
        assert (await conn.client.wait_goaway())[1] == GoAwayStatus.PROTOCOL_ERROR


async def test_stream_ids_must_increase() -> None:
    async with connected() as conn:
        await conn.client.send_syn_stream(5, {"streamtype": "data"})
        await conn.client.send_syn_stream(3, {"streamtype": "data"})
        with pytest.raises(SpdyProtocolError):
            await conn.runner


async def test_goaway_from_the_client_ends_accepting_only() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        await conn.client.go_away()
        assert await conn.session.accept() is None
        assert await conn.session.accept() is None
        await stream.write(b"after goaway")
        await stream.close()
        assert await client_stream.read_all() == b"after goaway"


async def test_client_leaving_ends_everything() -> None:
    async with connected() as conn:
        stream, client_stream = await open_accepted(conn)
        await client_stream.write(b"last words")
        await conn.client.ping()
        await conn.client.close()
        await conn.runner
        assert conn.session.ended
        assert stream.aborted
        assert await stream.read() == b"last words"  # what arrived is still delivered
        assert await stream.read() == b""
        assert await conn.session.accept() is None
        with pytest.raises(SpdyStreamClosed):
            await stream.write(b"x")


async def test_close_sends_goaway_with_the_last_stream() -> None:
    async with connected() as conn:
        await open_accepted(conn)
        await open_accepted(conn)
        await conn.session.close()
        assert await conn.client.wait_goaway() == (3, GoAwayStatus.OK)
        await conn.client.wait_disconnected()
        await conn.runner
