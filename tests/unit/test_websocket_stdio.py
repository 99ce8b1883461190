"""Exec/attach over WebSocket: the server side against our own client on loopback TCP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from cri.streaming import websocket
from cri.streaming.websocket import Inbox
from cri.streaming.websocket_stdio import (
    SUBPROTOCOLS,
    V1,
    V1_BASE64,
    V4,
    V4_BASE64,
    V5,
    WebSocketStdio,
    open_stdio,
)
from runtime.streaming.streams import StdioClient, TerminalSize
from tests.streaming.ws_client import ChannelClient, LoopbackServer, Rejected, loopback_server

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
SUCCESS = {"metadata": {}, "status": "Success"}

Session = Callable[[WebSocketStdio], Awaitable[None]]


@asynccontextmanager
async def serving(
    session: Session, *, stdin: bool = True, stdout: bool = True, stderr: bool = True
) -> AsyncIterator[LoopbackServer]:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        ws = await websocket.accept(reader, writer, head, SUBPROTOCOLS, allow_no_subprotocol=True)
        stdio = await open_stdio(ws, stdin=stdin, stdout=stdout, stderr=stderr, tty=True)
        await session(stdio)

    async with loopback_server(handler) as server:
        yield server


async def connect(server: LoopbackServer, *protocols: str) -> ChannelClient:
    ws = await server.connect("/exec/token", protocols)
    return ChannelClient(ws, base64_text=ws.subprotocol in (V4_BASE64, V1_BASE64))


async def echo_then_exit(stdio: WebSocketStdio, exit_code: int = 0) -> None:
    while data := await stdio.read_stdin():
        await stdio.write_stdout(data)
    await stdio.finish(exit_code)


async def test_is_a_stdio_client() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        client: StdioClient = stdio
        assert (client.stdin, client.stdout, client.stderr, client.tty) == (True, False, True, True)
        await stdio.finish(0)

    async with serving(session, stdout=False) as server:
        await (await connect(server, V5)).read_to_end()


async def test_newest_protocol_the_client_offers_wins() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, V1, "x-unknown", V4, V5, V4_BASE64)
        assert client.ws.subprotocol == V5
        await client.read_to_end()


@pytest.mark.parametrize("protocol", SUBPROTOCOLS)
async def test_each_protocol_is_accepted_alone(protocol: str) -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, protocol)
        assert client.ws.subprotocol == protocol
        await client.read_to_end()


async def test_unsupported_protocols_are_refused_with_the_supported_ones() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        raise AssertionError("no session without a protocol")

    async with serving(session) as server:
        with pytest.raises(Rejected) as refused:
            await server.connect("/exec/token", ["v9.channel.k8s.io", "v2.channel.k8s.io"])
    assert refused.value.status == 400
    body = refused.value.body.decode()
    assert "v9.channel.k8s.io" in body
    assert all(protocol in body for protocol in SUBPROTOCOLS)


async def test_a_request_without_websocket_headers_is_refused() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        raise AssertionError("no session without a handshake")

    async with serving(session) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /exec/token HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n")
        response = await reader.read()
        writer.close()
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Version" in response


async def test_no_subprotocol_means_v1_binary_with_a_text_status() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.write_stdout(await stdio.read_stdin())
        await stdio.finish(3)

    async with serving(session) as server:
        client = await connect(server)
        assert client.ws.subprotocol is None
        await client.send(STDIN, b"hi")
        received = await client.read_to_end()
    assert received == {
        STDOUT: b"hi",
        ERROR: b"command terminated with non-zero exit code: exit status 3",
    }


@pytest.mark.parametrize(
    ("stdout", "stderr", "channel"),
    [(True, True, STDOUT), (False, True, STDERR), (False, False, ERROR)],
)
async def test_first_message_is_empty_on_the_lowest_channel_the_client_reads(
    stdout: bool, stderr: bool, channel: int
) -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.finish(0)

    async with serving(session, stdout=stdout, stderr=stderr) as server:
        client = await connect(server, V5)
        assert await client.receive() == (channel, b"")
        await client.read_to_end()


@pytest.mark.parametrize("protocol", [V5, V4, V4_BASE64])
async def test_streams_both_ways_then_success_status_and_normal_close(protocol: str) -> None:
    async def session(stdio: WebSocketStdio) -> None:
        data = await stdio.read_stdin()
        await stdio.write_stdout(b"out:" + data)
        await stdio.write_stderr(b"err:" + data)
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, protocol)
        await client.send(STDIN, b"\x00\xffbytes")
        received = await client.read_to_end()
    assert received == {
        STDOUT: b"out:\x00\xffbytes",
        STDERR: b"err:\x00\xffbytes",
        ERROR: json.dumps(SUCCESS, separators=(",", ":")).encode(),
    }
    assert client.ws.close_code == 1000


async def test_base64_protocols_send_text_messages() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.write_stdout(b"\x01\x02")
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, V4_BASE64)
        assert await client.ws.receive() == "1"  # the empty first message
        assert await client.ws.receive() == "1AQI="
        assert await client.ws.receive() == "3" + "eyJtZXRhZGF0YSI6e30sInN0YXR1cyI6IlN1Y2Nlc3MifQ=="
        assert await client.ws.receive() is None


async def test_v1_reports_success_by_saying_nothing() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, V1)
        assert await client.read_to_end() == {}
    assert client.ws.close_code == 1000


async def test_non_zero_exit_is_a_failure_status_with_the_code() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.finish(5)

    async with serving(session) as server:
        client = await connect(server, V5)
        status = json.loads((await client.read_to_end())[ERROR])
    assert status == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: exit status 5",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "5"}]},
    }
    assert client.ws.close_code == 1000


async def test_an_error_is_an_internal_error_status() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.fail("container not running")

    async with serving(session) as server:
        v5 = await connect(server, V5)
        status = json.loads((await v5.read_to_end())[ERROR])
        v1 = await connect(server, V1_BASE64)
        text = (await v1.read_to_end())[ERROR]
    assert status["status"] == "Failure"
    assert status["reason"] == "InternalError"
    assert status["code"] == 500
    assert status["message"] == "Internal error occurred: container not running"
    assert text == b"Internal error occurred: container not running"


async def test_v5_close_signal_ends_stdin_after_what_came_before() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        received = b""
        while data := await stdio.read_stdin():
            received += data
        await stdio.write_stdout(received)
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, V5)
        await client.send(STDIN, b"abc")
        await client.send(STDIN, b"def")
        await client.close_stdin()
        assert (await client.read_to_end())[STDOUT] == b"abcdef"


async def test_close_signal_is_an_unknown_channel_before_v5() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.write_stdout(await stdio.read_stdin())
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, V4)
        await client.ws.send_binary(bytes([255, 0]))
        await client.send(STDIN, b"still open")
        assert (await client.read_to_end())[STDOUT] == b"still open"


async def test_stdin_not_asked_for_is_ignored_and_ends_at_once() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        assert await stdio.read_stdin() == b""
        await stdio.write_stdout(b"done")
        await stdio.finish(0)

    async with serving(session, stdin=False) as server:
        client = await connect(server, V5)
        await client.send(STDIN, b"dropped")
        assert (await client.read_to_end())[STDOUT] == b"done"


async def test_resizes_are_parsed_and_end_when_the_client_goes() -> None:
    sizes: list[TerminalSize] = []

    async def session(stdio: WebSocketStdio) -> None:
        async for size in stdio.resizes():
            sizes.append(size)
            await stdio.write_stdout(b"ok")

    async with serving(session) as server:
        client = await connect(server, V5)
        await client.resize(80, 24)
        assert await client.read(STDOUT, 2) == b"ok"
        await client.send(RESIZE, b"not json")
        await client.send(RESIZE, b'{"Width":-1,"Height":5} {"Width":"wide"}')
        await client.send(RESIZE, b'{"width":100,"HEIGHT":40}\n')
        assert await client.read(STDOUT, 2) == b"ok"
        await client.send(RESIZE, b'{"Width":1,"Height":2}{"Width":3,"Height":4}')
        assert await client.read(STDOUT, 2) == b"ok"
        await client.ws.close()
    assert sizes == [TerminalSize(80, 24), TerminalSize(100, 40), TerminalSize(3, 4)]


async def test_client_closing_is_seen_as_gone() -> None:
    async def session(stdio: WebSocketStdio) -> None:
        await stdio.wait_gone()
        assert stdio.gone
        assert await stdio.read_stdin() == b""
        await stdio.write_stdout(b"nobody listens")
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, V5)
        await client.ws.close()
    assert client.ws.close_code == 1000


@pytest.mark.parametrize("mid_frame", [False, True])
async def test_client_vanishing_mid_stream_ends_the_session_quietly(mid_frame: bool) -> None:
    async def session(stdio: WebSocketStdio) -> None:
        assert await stdio.read_stdin() == b"first"
        await stdio.write_stdout(b"ack")
        await stdio.wait_gone()
        assert await stdio.read_stdin() == b""
        for _ in range(100):  # enough to hit the broken connection, not only a buffer
            await stdio.write_stdout(b"x" * 65536)
        await stdio.finish(0)

    async with serving(session) as server:
        client = await connect(server, V5)
        await client.send(STDIN, b"first")
        assert await client.read(STDOUT, 3) == b"ack"
        if mid_frame:
            # A masked binary frame announcing 1000 bytes, cut after 10.
            await client.ws.send_raw(bytes([0x82, 0x80 | 126, 0x03, 0xE8, 1, 2, 3, 4]) + b"0" * 10)
        client.ws.vanish()


async def test_inbox_holds_back_a_producer_past_its_limit() -> None:
    inbox = Inbox(limit=4)
    await inbox.put(b"abcd")
    putting = asyncio.Event()

    async def put_second() -> None:
        # Nothing awaits between set() and the put: a put that does not wait is done by the
        # time this task is seen putting.
        putting.set()
        await inbox.put(b"efgh")

    blocked = asyncio.create_task(put_second())
    await putting.wait()
    assert not blocked.done()
    assert await inbox.get() == b"abcd"
    await blocked
    await inbox.put(b"")  # not an end of data
    inbox.close()
    await inbox.put(b"dropped")
    assert [await inbox.get(), await inbox.get()] == [b"efgh", b""]
