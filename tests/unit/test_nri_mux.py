"""The NRI multiplexer over a real unix socket in a temporary directory: trunk frames, logical
connections, the ends of the trunk, and an NRI registration and configuration over one trunk
with ttrpc both ways. Where the wire itself is the point, one end is the raw socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.nri.mux import (
    HEADER_LENGTH,
    MAX_PAYLOAD_LENGTH,
    PLUGIN_SERVICE_CONN,
    READ_QUEUE_LENGTH,
    RUNTIME_SERVICE_CONN,
    Mux,
    MuxProtocolError,
    decode_header,
    encode_frames,
)
from runtime.nri.proto import api_pb2
from runtime.nri.ttrpc import TtrpcConnection

PLUGIN = api_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name
RUNTIME = api_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


# Fails a test after which the event loop saw an exception nobody handled.
pytestmark = pytest.mark.usefixtures("no_loop_errors")


@contextlib.asynccontextmanager
async def unix_trunk(tmp_path: Path) -> AsyncIterator[tuple[Streams, Streams]]:
    """(the accepting end, the connecting end) of one connection on a socket in tmp_path,
    as the runtime's NRI socket and a plugin see it."""
    accepted: asyncio.Future[Streams] = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_unix_server(accept, tmp_path / "nri.sock")
    try:
        connecting = await asyncio.open_unix_connection(tmp_path / "nri.sock")
        accepting = await accepted
        try:
            async with asyncio.timeout(10):  # a hang fails the test instead of the whole run
                yield accepting, connecting
        finally:
            accepting[1].close()
            connecting[1].close()
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def mux_facing_a_raw_peer(
    tmp_path: Path, read_queue_length: int = READ_QUEUE_LENGTH
) -> AsyncIterator[tuple[Mux, Streams]]:
    async with unix_trunk(tmp_path) as (accepting, raw):
        mux = Mux(*accepting, read_queue_length=read_queue_length, peer="raw")
        try:
            yield mux, raw
        finally:
            await mux.close()


def frame(conn_id: int, payload: bytes) -> bytes:
    return conn_id.to_bytes(4, "big") + len(payload).to_bytes(4, "big") + payload


# -- frames -----------------------------------------------------------------------------------


def test_a_frame_is_connection_id_length_payload_big_endian() -> None:
    assert encode_frames(0x01020304, b"abc") == b"\x01\x02\x03\x04" + b"\x00\x00\x00\x03abc"
    assert decode_header(b"\x01\x02\x03\x04\x00\x00\x00\x03") == (0x01020304, 3)


def test_a_long_write_goes_out_in_frames_of_at_most_one_ttrpc_message() -> None:
    data = bytes(range(256)) * (MAX_PAYLOAD_LENGTH // 256 + 1)

    encoded = encode_frames(RUNTIME_SERVICE_CONN, data)

    first = decode_header(encoded[:HEADER_LENGTH])
    rest = encoded[HEADER_LENGTH + MAX_PAYLOAD_LENGTH :]
    second = decode_header(rest[:HEADER_LENGTH])
    assert first == (RUNTIME_SERVICE_CONN, MAX_PAYLOAD_LENGTH)
    assert second == (RUNTIME_SERVICE_CONN, len(data) - MAX_PAYLOAD_LENGTH)
    assert (
        encoded[HEADER_LENGTH : HEADER_LENGTH + MAX_PAYLOAD_LENGTH] + rest[HEADER_LENGTH:] == data
    )


def test_a_header_announcing_more_than_one_ttrpc_message_is_a_protocol_error() -> None:
    with pytest.raises(MuxProtocolError):
        decode_header(frame(1, b"")[:4] + (MAX_PAYLOAD_LENGTH + 1).to_bytes(4, "big"))


async def test_connection_id_0_is_reserved(tmp_path: Path) -> None:
    async with mux_facing_a_raw_peer(tmp_path) as (mux, _):
        with pytest.raises(ValueError, match="reserved"):
            mux.open(0)
        assert mux.open(PLUGIN_SERVICE_CONN) is mux.open(PLUGIN_SERVICE_CONN)


# -- logical connections ----------------------------------------------------------------------


async def test_each_connection_reads_its_own_bytes_across_frames(tmp_path: Path) -> None:
    async with unix_trunk(tmp_path) as (accepting, connecting):
        near, far = Mux(*accepting), Mux(*connecting)
        near_conns = [near.open(PLUGIN_SERVICE_CONN), near.open(RUNTIME_SERVICE_CONN)]
        far_conns = [far.open(PLUGIN_SERVICE_CONN), far.open(RUNTIME_SERVICE_CONN)]
        near.start()
        far.start()
        long = bytes(range(256)) * (MAX_PAYLOAD_LENGTH // 256 + 1)

        near_conns[0].write(b"one ")
        near_conns[1].write(b"two")
        near_conns[0].write(long)
        await near_conns[0].drain()

        assert await far_conns[1].readexactly(3) == b"two"
        assert await far_conns[0].readexactly(2) == b"on"
        assert await far_conns[0].readexactly(2 + len(long)) == b"e " + long
        await near.close()
        await far.wait_closed()


async def test_frames_for_a_connection_nobody_opened_are_dropped(tmp_path: Path) -> None:
    async with mux_facing_a_raw_peer(tmp_path) as (mux, (_, writer)):
        conn = mux.open(PLUGIN_SERVICE_CONN)
        mux.start()

        writer.write(frame(7, b"lost") + frame(PLUGIN_SERVICE_CONN, b"kept"))

        assert await conn.readexactly(4) == b"kept"
        assert not mux.closed


async def test_a_closed_connection_drops_what_still_comes_for_it(tmp_path: Path) -> None:
    async with mux_facing_a_raw_peer(tmp_path) as (mux, (_, writer)):
        closed, kept = mux.open(PLUGIN_SERVICE_CONN), mux.open(RUNTIME_SERVICE_CONN)
        mux.start()

        closed.close()
        writer.write(frame(PLUGIN_SERVICE_CONN, b"lost") + frame(RUNTIME_SERVICE_CONN, b"kept"))

        assert await kept.readexactly(4) == b"kept"
        with pytest.raises(asyncio.IncompleteReadError):
            await closed.readexactly(1)
        with pytest.raises(ConnectionResetError):
            closed.write(b"late")


async def test_an_overrun_read_queue_ends_the_trunk_and_every_connection(
    tmp_path: Path,
) -> None:
    async with mux_facing_a_raw_peer(tmp_path, read_queue_length=2) as (mux, (reader, writer)):
        flooded, other = mux.open(PLUGIN_SERVICE_CONN), mux.open(RUNTIME_SERVICE_CONN)
        mux.start()

        writer.write(b"".join(frame(PLUGIN_SERVICE_CONN, b"x") for _ in range(3)))
        await mux.wait_closed()

        assert isinstance(mux.error, MuxProtocolError)
        assert "read queue of connection 1 overflowed" in str(mux.error)
        assert await flooded.readexactly(2) == b"xx"  # what was queued is still delivered
        for conn in (flooded, other):
            with pytest.raises(ConnectionAbortedError, match="overflowed"):
                await conn.readexactly(1)
        assert await reader.read() == b""


async def test_an_oversized_frame_ends_the_trunk(tmp_path: Path) -> None:
    async with mux_facing_a_raw_peer(tmp_path) as (mux, (reader, writer)):
        conn = mux.open(PLUGIN_SERVICE_CONN)
        mux.start()

        writer.write(b"\x00\x00\x00\x01\xff\xff\xff\xff")
        await mux.wait_closed()

        assert isinstance(mux.error, MuxProtocolError)
        with pytest.raises(ConnectionAbortedError):
            await conn.readexactly(1)
        assert await reader.read() == b""


async def test_the_trunk_ending_ends_every_connection(tmp_path: Path) -> None:
    async with mux_facing_a_raw_peer(tmp_path) as (mux, (_, writer)):
        conns = [mux.open(PLUGIN_SERVICE_CONN), mux.open(RUNTIME_SERVICE_CONN)]
        mux.start()

        writer.write(frame(PLUGIN_SERVICE_CONN, b"last"))
        writer.close()
        await mux.wait_closed()

        assert mux.error is None
        assert await conns[0].readexactly(4) == b"last"
        for conn in conns:
            with pytest.raises(asyncio.IncompleteReadError):
                await conn.readexactly(1)


async def test_closing_the_mux_ends_its_connections_and_the_trunk(tmp_path: Path) -> None:
    async with mux_facing_a_raw_peer(tmp_path) as (mux, (reader, _)):
        conn = mux.open(RUNTIME_SERVICE_CONN)
        mux.start()
        waiting = asyncio.create_task(conn.readexactly(1))

        await mux.close()

        with pytest.raises(asyncio.IncompleteReadError):
            await waiting
        with pytest.raises(ConnectionResetError):
            conn.write(b"late")
        with pytest.raises(ConnectionResetError):
            mux.open(PLUGIN_SERVICE_CONN)
        assert await reader.read() == b""


# -- NRI over one trunk -----------------------------------------------------------------------

# ConfigureResponse.events: bit n-1 subscribes to the Event numbered n.
CREATE_AND_STOP = 1 << (api_pb2.CREATE_CONTAINER - 1) | 1 << (api_pb2.STOP_CONTAINER - 1)


async def test_runtime_and_plugin_call_each_other_over_one_trunk(tmp_path: Path) -> None:
    registered: list[api_pb2.RegisterPluginRequest] = []
    configured: list[api_pb2.ConfigureRequest] = []

    async def register_plugin(payload: bytes) -> bytes:
        registered.append(api_pb2.RegisterPluginRequest.FromString(payload))
        return api_pb2.Empty().SerializeToString()

    async def configure(payload: bytes) -> bytes:
        configured.append(api_pb2.ConfigureRequest.FromString(payload))
        return api_pb2.ConfigureResponse(events=CREATE_AND_STOP).SerializeToString()

    async with unix_trunk(tmp_path) as (runtime_end, plugin_end):
        runtime_mux, plugin_mux = Mux(*runtime_end, peer="plugin"), Mux(*plugin_end)
        # The runtime calls the plugin on one connection and serves it on the other.
        to_plugin = runtime_mux.open(PLUGIN_SERVICE_CONN)
        from_plugin = runtime_mux.open(RUNTIME_SERVICE_CONN)
        plugin_service = plugin_mux.open(PLUGIN_SERVICE_CONN)
        to_runtime = plugin_mux.open(RUNTIME_SERVICE_CONN)
        runtime_mux.start()
        plugin_mux.start()
        async with (
            TtrpcConnection(to_plugin, to_plugin, peer="plugin") as runtime_calls,
            TtrpcConnection(
                from_plugin, from_plugin, {(RUNTIME, "RegisterPlugin"): register_plugin}
            ),
            TtrpcConnection(plugin_service, plugin_service, {(PLUGIN, "Configure"): configure}),
            TtrpcConnection(to_runtime, to_runtime, peer="runtime") as plugin_calls,
        ):
            registration = api_pb2.RegisterPluginRequest(plugin_name="logger", plugin_idx="10")
            empty = await plugin_calls.call(
                RUNTIME, "RegisterPlugin", registration.SerializeToString()
            )
            answer = await runtime_calls.call(
                PLUGIN,
                "Configure",
                api_pb2.ConfigureRequest(
                    runtime_name="moorage", runtime_version="0.1.0", request_timeout=2000
                ).SerializeToString(),
                timeout_s=2,
            )

            await runtime_mux.close()
            await plugin_calls.wait_closed()
            assert plugin_calls.error is None
            await plugin_mux.wait_closed()
            assert plugin_mux.error is None

    assert api_pb2.Empty.FromString(empty) == api_pb2.Empty()
    assert registered == [registration]
    assert [(c.runtime_name, c.runtime_version, c.request_timeout) for c in configured] == [
        ("moorage", "0.1.0", 2000)
    ]
    assert api_pb2.ConfigureResponse.FromString(answer).events == CREATE_AND_STOP
