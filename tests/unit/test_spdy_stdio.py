"""Exec and attach stream set-up over SPDY, and the outcome on the error stream, against the
test client opening streams the way client-go does (one at a time, each awaiting its reply)."""

from __future__ import annotations

import asyncio
import json

import pytest

from cri.streaming.http_front import read_request, switching_protocols
from cri.streaming.spdy import SpdySession
from cri.streaming.spdy_frames import RstStatus
from cri.streaming.spdy_stdio import (
    PROTOCOLS,
    V1,
    V2,
    V3,
    V4,
    SpdyStdio,
    StreamSetupError,
    accept_stdio,
)
from cri.streaming.transport import StreamTransport
from runtime.streaming.streams import StdioClient, TerminalSize
from tests.streaming.spdy_client import ClientStream, connect
from tests.streaming.spdy_pair import Connection, connected


async def open_exec(
    conn: Connection, kinds: list[str], protocol: str = V4, *, tty: bool = False
) -> tuple[SpdyStdio, dict[str, ClientStream]]:
    setup = asyncio.create_task(
        accept_stdio(
            conn.session,
            protocol,
            stdin="stdin" in kinds,
            stdout="stdout" in kinds,
            stderr="stderr" in kinds,
            tty=tty,
        )
    )
    streams = {}
    for kind in kinds:
        streams[kind] = await conn.client.open_stream({"streamtype": kind})
        await streams[kind].wait_reply()
    return await setup, streams


async def test_exec_streams_data_and_success() -> None:
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdin", "stdout", "stderr"])
        client: StdioClient = stdio
        assert (client.stdin, client.stdout, client.stderr, client.tty) == (True, True, True, False)
        await streams["stdin"].write(b"input")
        await streams["stdin"].close()
        assert await stdio.read_stdin() == b"input"
        assert await stdio.read_stdin() == b""
        await stdio.write_stdout(b"out")
        await stdio.write_stderr(b"err")
        await stdio.finish(0)
        assert await streams["stdout"].read_all() == b"out"
        assert await streams["stderr"].read_all() == b"err"
        assert await streams["error"].read_all() == b'{"metadata":{},"status":"Success"}'
        assert not stdio.gone


async def test_nonzero_exit_is_a_v4_status_with_the_code() -> None:
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdout"])
        await stdio.finish(5)
        assert await streams["error"].read_all() == (
            b'{"metadata":{},"status":"Failure",'
            b'"message":"command terminated with non-zero exit code: exit status 5",'
            b'"reason":"NonZeroExitCode",'
            b'"details":{"causes":[{"reason":"ExitCode","message":"5"}]}}'
        )
        assert await streams["stdout"].read_all() == b""


async def test_failure_is_a_v4_internal_error() -> None:
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdout"])
        await stdio.fail("no such container")
        status = json.loads(await streams["error"].read_all())
        assert status == {
            "metadata": {},
            "status": "Failure",
            "message": "Internal error occurred: no such container",
            "reason": "InternalError",
            "details": {"causes": [{"message": "no such container"}]},
            "code": 500,
        }


@pytest.mark.parametrize("protocol", [V3, V2, V1])
async def test_older_protocols_send_plain_text(protocol: str) -> None:
    for exit_code, expected in [
        (0, b""),
        (7, b"command terminated with non-zero exit code: exit status 7"),
    ]:
        async with connected() as conn:
            stdio, streams = await open_exec(conn, ["error", "stdout"], protocol)
            await stdio.finish(exit_code)
            assert await streams["error"].read_all() == expected
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdout"], protocol)
        await stdio.fail("boom")
        assert await streams["error"].read_all() == b"Internal error occurred: boom"


async def test_finish_twice_and_bad_exit_codes() -> None:
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdout"])
        with pytest.raises(ValueError):
            await stdio.finish(256)
        await stdio.finish(0)
        await stdio.finish(1)
        assert await streams["error"].read_all() == b'{"metadata":{},"status":"Success"}'


async def test_terminal_resizes_arrive_in_order() -> None:
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdin", "stdout", "resize"], tty=True)
        assert stdio.tty
        sizes = asyncio.create_task(_collect(stdio))
        await streams["resize"].write(b'{"Width":80,"Height":24}\n{"Width":1')
        await streams["resize"].write(b'00,"height":30}\n{"Width":7}\n')
        await streams["resize"].close()
        assert await sizes == [
            TerminalSize(80, 24),
            TerminalSize(100, 30),
            TerminalSize(7, 0),  # a missing field is 0, as Go decodes it
        ]


@pytest.mark.parametrize(
    "garbage", [b"x" * 5000, b'"not an object"\n', b'{"Width":-1,"Height":5}\n', b"[1]"]
)
async def test_resizes_stop_at_garbage(garbage: bytes) -> None:
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdout", "resize"], tty=True)
        sizes = asyncio.create_task(_collect(stdio))
        await streams["resize"].write(b'{"Width":1,"Height":2}' + garbage)
        assert await sizes == [TerminalSize(1, 2)]


async def test_v2_has_no_resize_stream_and_resizes_end_with_the_client() -> None:
    async with connected() as conn:
        stdio, _ = await open_exec(conn, ["error", "stdout"], V2, tty=True)
        sizes = asyncio.create_task(_collect(stdio))
        await conn.client.close()
        assert await sizes == []


async def test_other_streams_are_refused() -> None:
    async with connected() as conn:
        setup = asyncio.create_task(
            accept_stdio(conn.session, V4, stdin=False, stdout=True, stderr=False, tty=False)
        )
        bogus = await conn.client.open_stream({"streamtype": "bogus"})
        assert await conn.client.wait_reset(bogus.id) == RstStatus.REFUSED_STREAM
        stdin = await conn.client.open_stream({"streamtype": "stdin"})  # not asked for
        assert await conn.client.wait_reset(stdin.id) == RstStatus.REFUSED_STREAM
        for kind in ("stdout", "error"):
            await (await conn.client.open_stream({"streamtype": kind})).wait_reply()
        stdio = await setup
        assert (stdio.stdin, stdio.stdout) == (False, True)
        assert await stdio.read_stdin() == b""


async def test_setup_times_out_without_all_streams() -> None:
    async with connected() as conn:
        setup = asyncio.create_task(
            accept_stdio(
                conn.session,
                V4,
                stdin=False,
                stdout=True,
                stderr=False,
                tty=False,
                creation_timeout_s=0.05,
            )
        )
        await (await conn.client.open_stream({"streamtype": "error"})).wait_reply()
        with pytest.raises(StreamSetupError, match="stdout"):
            await setup


async def test_setup_fails_when_the_client_leaves() -> None:
    async with connected() as conn:
        setup = asyncio.create_task(
            accept_stdio(conn.session, V4, stdin=False, stdout=True, stderr=False, tty=False)
        )
        await conn.client.close()
        with pytest.raises(StreamSetupError):
            await setup


async def test_unknown_protocol_is_a_bug() -> None:
    async with connected() as conn:
        with pytest.raises(ValueError):
            await accept_stdio(conn.session, "v9", stdin=True, stdout=True, stderr=False, tty=False)


async def test_client_leaving_is_noticed() -> None:
    async with connected() as conn:
        stdio, _ = await open_exec(conn, ["error", "stdin", "stdout"])
        gone = asyncio.create_task(stdio.wait_gone())
        await conn.client.close()
        await gone
        assert stdio.gone
        assert await stdio.read_stdin() == b""
        await stdio.write_stdout(b"nobody listens")
        await stdio.finish(0)


async def test_a_reset_stream_means_the_client_is_gone() -> None:
    async with connected() as conn:
        stdio, streams = await open_exec(conn, ["error", "stdout"])
        await streams["stdout"].reset()
        await stdio.wait_gone()
        assert stdio.gone
        await stdio.write_stdout(b"quietly dropped")


async def test_exec_over_tcp_after_the_http_upgrade() -> None:
    problems: list[BaseException] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            assert request.upgrades_to("SPDY/3.1")
            offered = request.tokens("x-stream-protocol-version")
            protocol = next(p for p in PROTOCOLS if p in offered)
            writer.write(
                switching_protocols(
                    [
                        ("Connection", "Upgrade"),
                        ("Upgrade", "SPDY/3.1"),
                        ("X-Stream-Protocol-Version", protocol),
                    ]
                )
            )
            session = SpdySession(StreamTransport(reader, writer))
            runner = asyncio.create_task(session.run())
            stdio = await accept_stdio(
                session, protocol, stdin=True, stdout=True, stderr=False, tty=False
            )
            while data := await stdio.read_stdin():
                await stdio.write_stdout(data.upper())
            await stdio.finish(3)
            await session.close()
            await runner
        except BaseException as exc:
            problems.append(exc)
            raise

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, asyncio.timeout(20):
        client, protocol = await connect("127.0.0.1", port, "/exec/token", [V4, V3])
        assert protocol == V4
        streams = {}
        for kind in ("error", "stdin", "stdout"):
            streams[kind] = await client.open_stream({"streamtype": kind})
            await streams[kind].wait_reply()
        for word in (b"round ", b"trip"):
            await streams["stdin"].write(word)
            assert await streams["stdout"].read() == word.upper()
        await streams["stdin"].close()
        assert await streams["stdout"].read_all() == b""
        status = json.loads(await streams["error"].read_all())
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
        assert (await client.wait_goaway())[1] == 0
        await client.close()
    assert not problems


async def _collect(stdio: SpdyStdio) -> list[TerminalSize]:
    return [size async for size in stdio.resizes()]
