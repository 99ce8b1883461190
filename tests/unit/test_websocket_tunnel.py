"""SPDY-over-WebSocket tunnel transport, and the WebSocket connection under every protocol:
the server side against our own client on loopback TCP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from cri.streaming import websocket
from cri.streaming.transport import ByteTransport
from cri.streaming.websocket import MAX_MESSAGE_BYTES, WebSocket
from cri.streaming.websocket_tunnel import SUBPROTOCOL, SUBPROTOCOLS, WebSocketTransport
from tests.streaming.ws_client import LoopbackServer, Rejected, WsClient, loopback_server

Serve = Callable[[WebSocket], Awaitable[None]]


@asynccontextmanager
async def serving(
    serve: Serve, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> AsyncIterator[LoopbackServer]:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        ws = await websocket.accept(
            reader, writer, head, SUBPROTOCOLS, max_message_bytes=max_message_bytes
        )
        await serve(ws)

    async with loopback_server(handler) as server:
        yield server


async def connect(server: LoopbackServer) -> WsClient:
    return await server.connect("/portforward/token", [SUBPROTOCOL])


async def echo(ws: WebSocket, read_size: int = 65536) -> None:
    transport: ByteTransport = WebSocketTransport(ws)
    while data := await transport.read(read_size):
        await transport.write(data)
    await transport.close()


async def test_tunnel_protocol_is_negotiated() -> None:
    async with serving(echo) as server:
        client = await connect(server)
        assert client.subprotocol == SUBPROTOCOL
        await client.close()


@pytest.mark.parametrize("offered", [[], ["v4.channel.k8s.io"], ["SPDY/3.1+other.k8s.io"]])
async def test_other_offers_are_refused(offered: list[str]) -> None:
    async with serving(echo) as server:
        with pytest.raises(Rejected) as refused:
            await server.connect("/portforward/token", offered)
    assert refused.value.status == 400
    assert SUBPROTOCOL in refused.value.body.decode()


@pytest.mark.parametrize("read_size", [1000, 1 << 20])
async def test_bytes_cross_both_ways_whatever_the_message_and_read_sizes(read_size: int) -> None:
    async with serving(lambda ws: echo(ws, read_size)) as server:
        client = await connect(server)
        sent = b""
        # Around the frame header's length forms (7-bit, 16-bit, 64-bit).
        for size in (1, 125, 126, 65535, 65536, 100_000):
            chunk = os.urandom(size)
            await client.send_binary(chunk)
            sent += chunk
        await client.send_fragments([b"frag", b"", b"mented"])
        sent += b"fragmented"
        received = b""
        while len(received) < len(sent):
            message = await client.receive()
            assert isinstance(message, bytes)
            received += message
        assert received == sent
        await client.close()
    assert client.close_code == 1000


async def test_a_large_transfer_is_intact() -> None:
    payload = os.urandom(8 << 20)

    async with serving(echo) as server:
        client = await connect(server)

        async def send() -> None:
            for offset in range(0, len(payload), 1 << 20):
                await client.send_binary(payload[offset : offset + (1 << 20)])

        sender = asyncio.create_task(send())
        received = bytearray()
        while len(received) < len(payload):
            message = await client.receive()
            assert isinstance(message, bytes)
            received += message
        await sender
        await client.close()
    assert received == payload


async def test_an_empty_message_is_not_the_end_of_the_stream() -> None:
    async with serving(echo) as server:
        client = await connect(server)
        await client.send_binary(b"")
        await client.send_binary(b"after")
        assert await client.receive() == b"after"
        await client.close()


async def test_closing_the_transport_closes_normally() -> None:
    async def serve(ws: WebSocket) -> None:
        transport = WebSocketTransport(ws)
        await transport.write(b"bye")
        await transport.close()
        assert await transport.read(10) == b""
        await transport.write(b"too late")

    async with serving(serve) as server:
        client = await connect(server)
        assert await client.receive() == b"bye"
        assert await client.receive() is None
    assert client.close_code == 1000


async def test_a_text_message_breaks_the_tunnel() -> None:
    async with serving(echo) as server:
        client = await connect(server)
        await client.send_text("not SPDY")
        assert await client.receive() is None
    assert client.close_code == 1003


async def test_peer_vanishing_mid_message_ends_reads_and_quiets_writes() -> None:
    done = asyncio.Event()

    async def serve(ws: WebSocket) -> None:
        transport = WebSocketTransport(ws)
        assert await transport.read(100) == b"start"
        await transport.write(b"ack")
        assert await transport.read(100) == b""
        for _ in range(100):
            await transport.write(b"x" * 65536)
        await transport.close()
        done.set()

    async with serving(serve) as server:
        client = await connect(server)
        await client.send_binary(b"start")
        assert await client.receive() == b"ack"
        await client.send_raw(bytes([0x82, 0x80 | 126, 0x03, 0xE8, 1, 2, 3, 4]) + b"0" * 10)
        client.vanish()
        await server.wait_handlers()
    assert done.is_set()


async def test_pings_are_answered() -> None:
    async with serving(echo) as server:
        client = await connect(server)
        await client.ping(b"beat")
        await client.send_binary(b"data")  # the echo comes after the pong
        assert await client.receive() == b"data"
        await client.close()
    assert client.pongs == [b"beat"]


@pytest.mark.parametrize("limit", [1024, MAX_MESSAGE_BYTES])
async def test_an_oversize_message_ends_the_connection(limit: int) -> None:
    received: list[bytes | str | None] = []

    async def serve(ws: WebSocket) -> None:
        received.append(await ws.receive())
        received.append(await ws.receive())

    async with serving(serve, max_message_bytes=limit) as server:
        client = await connect(server)
        await client.send_binary(b"a" * limit)
        await client.send_fragments([b"b" * (limit // 2), b"b" * (limit // 2 + 1)])
        assert await client.receive() is None
    assert client.close_code == 1009
    assert received == [b"a" * limit, None]


async def test_a_protocol_error_ends_the_connection() -> None:
    async def serve(ws: WebSocket) -> None:
        assert await ws.receive() is None

    async with serving(serve) as server:
        client = await connect(server)
        await client.send_raw(bytes([0x82, 0x01]) + b"A")  # unmasked: clients must mask
        assert await client.receive() is None
    assert client.close_code == 1002


async def test_close_gives_up_on_a_peer_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT_S", 0.05)
    closed = asyncio.Event()

    async def serve(ws: WebSocket) -> None:
        await ws.close()
        assert ws.closed
        closed.set()

    async with serving(serve) as server:
        client = await connect(server)  # and never reads, so never answers the close
        await closed.wait()
        assert await client.receive() is None
