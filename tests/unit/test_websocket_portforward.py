"""Port-forward over WebSocket: the server side against our own client on loopback TCP."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import pytest

from cri.streaming import websocket
from cri.streaming.websocket_portforward import (
    MAX_PORTS,
    SUBPROTOCOLS,
    V4,
    V4_BASE64,
    serve_port_forward,
)
from runtime.streaming.streams import PortStream
from tests.streaming.ws_client import ChannelClient, LoopbackServer, Rejected, loopback_server

Handle = Callable[[PortStream], Awaitable[None]]


@asynccontextmanager
async def serving(ports: Sequence[int], handle: Handle) -> AsyncIterator[LoopbackServer]:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        ws = await websocket.accept(reader, writer, head, SUBPROTOCOLS, allow_no_subprotocol=True)
        await serve_port_forward(ws, ports, handle)

    async with loopback_server(handler) as server:
        yield server


async def connect(server: LoopbackServer, *protocols: str) -> ChannelClient:
    ws = await server.connect("/portforward/token?port=80", protocols)
    return ChannelClient(ws, base64_text=ws.subprotocol == V4_BASE64)


def port_prefix(port: int) -> bytes:
    return struct.pack("<H", port)


async def echo_upper(stream: PortStream) -> None:
    while data := await stream.read():
        await stream.write(data.upper())
    await stream.close_write()


async def test_binary_framing_is_preferred_and_no_subprotocol_is_accepted() -> None:
    async with serving([80], echo_upper) as server:
        both = await connect(server, V4_BASE64, V4)
        none = await connect(server)
        assert (both.ws.subprotocol, none.ws.subprotocol) == (V4, None)
        await both.ws.close()
        await none.ws.close()


async def test_other_protocols_are_refused() -> None:
    async with serving([80], echo_upper) as server:
        with pytest.raises(Rejected) as refused:
            await server.connect("/portforward/token", ["portforward.k8s.io"])
    assert refused.value.status == 400
    assert all(protocol in refused.value.body.decode() for protocol in SUBPROTOCOLS)


@pytest.mark.parametrize("protocol", [V4, V4_BASE64])
async def test_each_port_has_a_data_and_an_error_channel_led_by_the_port(protocol: str) -> None:
    ports = [80, 8443, 65535]

    async def handle(stream: PortStream) -> None:
        data = await stream.read()
        await stream.write(b"%d got " % stream.port + data)
        await stream.report_error(f"port {stream.port} failed")

    async with serving(ports, handle) as server:
        client = await connect(server, protocol)
        for index, port in enumerate(ports):
            assert await client.read(2 * index, 2) == port_prefix(port)
            assert await client.read(2 * index + 1, 2) == port_prefix(port)
        for index in reversed(range(len(ports))):
            await client.send(2 * index, b"data %d" % index)
        received = await client.read_to_end()
    assert received == {
        0: b"80 got data 0",
        1: b"port 80 failed",
        2: b"8443 got data 1",
        3: b"port 8443 failed",
        4: b"65535 got data 2",
        5: b"port 65535 failed",
    }
    assert client.ws.close_code == 1000


async def test_data_flows_both_ways_until_the_handler_is_done() -> None:
    async with serving([80, 81], echo_upper) as server:
        client = await connect(server, V4)
        await client.read(0, 2)
        await client.read(2, 2)
        for chunk in (b"abc", b"def", b"x" * 100_000):
            await client.send(2, chunk)
            assert await client.read(2, len(chunk)) == chunk.upper()
        # What comes on an error channel or a channel past the ports is dropped.
        await client.send(1, b"ignored")
        await client.send(9, b"ignored")
        await client.send(0, b"last")
        assert await client.read(0, 4) == b"LAST"
        await client.ws.close()
    assert client.ws.close_code == 1000


async def test_client_vanishing_cancels_the_handlers_without_errors() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handle(stream: PortStream) -> None:
        await stream.write(b"hello")
        started.set()
        try:
            await asyncio.Event().wait()  # a pod side that never ends by itself
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serving([80], handle) as server:
        client = await connect(server, V4)
        assert await client.read(0, 2 + 5) == port_prefix(80) + b"hello"
        await started.wait()
        client.ws.vanish()
        await server.wait_handlers()
    assert cancelled.is_set()


async def test_after_close_write_nothing_more_is_sent() -> None:
    async def handle(stream: PortStream) -> None:
        await stream.write(b"before")
        await stream.close_write()
        await stream.write(b"after")
        assert await stream.read() == b"still read"

    async with serving([80], handle) as server:
        client = await connect(server, V4)
        await client.send(0, b"still read")
        received = await client.read_to_end()
    assert received[0] == port_prefix(80) + b"before"


async def test_port_count_is_bounded_by_the_channel_byte() -> None:
    async def handle(stream: PortStream) -> None:
        raise AssertionError("not reached")

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        ws = await websocket.accept(reader, writer, head, SUBPROTOCOLS)
        for ports in ([], list(range(1, MAX_PORTS + 2))):
            with pytest.raises(ValueError, match="ports"):
                await serve_port_forward(ws, ports, handle)
        await ws.close()

    async with loopback_server(handler) as server:
        client = await server.connect("/portforward/token", [V4])
        assert await client.receive() is None
