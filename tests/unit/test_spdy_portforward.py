"""Port-forward stream pairing over SPDY, against the test client opening pairs as client-go
does: error stream then data stream, both with the same port and requestid."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field

from cri.streaming.spdy_frames import RstStatus
from cri.streaming.spdy_portforward import serve_port_forward
from runtime.streaming.streams import PortStream
from tests.streaming.spdy_client import ClientStream
from tests.streaming.spdy_pair import Connection, connected


@dataclass
class Forwarding:
    conn: Connection
    handled: list[int] = field(default_factory=list)  # ports, in the order handlers started


async def echo(pair: PortStream) -> None:
    """Send back what arrives, then close."""
    while data := await pair.read():
        await pair.write(data)
    await pair.close_write()


@contextlib.asynccontextmanager
async def forwarding(
    handle: Callable[[PortStream], Awaitable[None]] = echo,
    *,
    ports: Collection[int] = (),
    pair_timeout_s: float = 30.0,
) -> AsyncIterator[Forwarding]:
    async with connected() as conn:
        state = Forwarding(conn)

        async def handle_and_note(pair: PortStream) -> None:
            state.handled.append(pair.port)
            await handle(pair)

        server = asyncio.create_task(
            serve_port_forward(
                conn.session, handle_and_note, ports=ports, pair_timeout_s=pair_timeout_s
            )
        )
        yield state
        await conn.client.close()
        await server


async def open_half(conn: Connection, kind: str, port: str, request_id: str | None) -> ClientStream:
    headers = {"streamtype": kind, "port": port}
    if request_id is not None:
        headers["requestid"] = request_id
    stream = await conn.client.open_stream(headers)
    await stream.wait_reply()
    return stream


async def open_pair(
    conn: Connection, port: int, request_id: str
) -> tuple[ClientStream, ClientStream]:
    error = await open_half(conn, "error", str(port), request_id)
    await error.close()  # client-go sends nothing on it
    return error, await open_half(conn, "data", str(port), request_id)


async def test_each_pair_is_forwarded() -> None:
    async with forwarding() as fwd:
        error, data = await open_pair(fwd.conn, 8080, "0")
        await data.write(b"ping")
        assert await data.read() == b"ping"
        await data.close()
        assert await data.read_all() == b""
        assert await error.read_all() == b""
        assert fwd.handled == [8080]


async def test_pairs_are_matched_by_request_id_not_order() -> None:
    async with forwarding() as fwd:
        conn = fwd.conn
        error_a = await open_half(conn, "error", "80", "a")
        error_b = await open_half(conn, "error", "443", "b")
        data_b = await open_half(conn, "data", "443", "b")
        data_a = await open_half(conn, "data", "80", "a")
        for data, text in ((data_a, b"to a"), (data_b, b"to b")):
            await data.write(text)
            await data.close()
        assert await data_a.read_all() == b"to a"
        assert await data_b.read_all() == b"to b"
        assert sorted(fwd.handled) == [80, 443]
        assert await error_a.read_all() == await error_b.read_all() == b""


async def test_many_pairs_at_once_with_more_than_a_window_each() -> None:
    payload = bytes(range(256)) * 1024

    async def one(index: int) -> bytes:
        _, data = await open_pair(fwd.conn, 9000 + index, str(index))

        async def send() -> None:
            await data.write(payload)
            await data.close()

        _, received = await asyncio.gather(send(), data.read_all())
        return received

    async with forwarding() as fwd:
        assert await asyncio.gather(*(one(i) for i in range(8))) == [payload] * 8


async def test_a_port_not_forwarded_gets_an_error() -> None:
    async with forwarding(ports=[80]) as fwd:
        error, data = await open_pair(fwd.conn, 81, "x")
        assert await error.read_all() == b"port 81 is not forwarded for this pod"
        assert await data.read_all() == b""
        _, allowed = await open_pair(fwd.conn, 80, "y")
        await allowed.write(b"fine")
        await allowed.close()
        assert await allowed.read_all() == b"fine"
        assert fwd.handled == [80]


async def test_bad_headers_are_refused_and_the_rest_goes_on() -> None:
    async with forwarding() as fwd:
        client = fwd.conn.client
        for headers in (
            {"streamtype": "data", "port": "http", "requestid": "1"},
            {"streamtype": "data", "port": "0", "requestid": "1"},
            {"streamtype": "data", "port": "65536", "requestid": "1"},
            {"streamtype": "data", "requestid": "1"},
            {"streamtype": "stdin", "port": "80", "requestid": "1"},
            {"port": "80", "requestid": "1"},
        ):
            stream = await client.open_stream(headers)
            assert await client.wait_reset(stream.id) == RstStatus.REFUSED_STREAM
        _, data = await open_pair(fwd.conn, 80, "2")
        await data.write(b"ok")
        await data.close()
        assert await data.read_all() == b"ok"


async def test_a_second_stream_of_a_kind_in_a_pair_is_reset() -> None:
    async with forwarding() as fwd:
        await open_half(fwd.conn, "error", "80", "r")
        extra = await fwd.conn.client.open_stream(
            {"streamtype": "error", "port": "80", "requestid": "r"}
        )
        assert await fwd.conn.client.wait_reset(extra.id) == RstStatus.PROTOCOL_ERROR


async def test_incomplete_pairs_expire() -> None:
    async with forwarding(pair_timeout_s=0.05) as fwd:
        error = await open_half(fwd.conn, "error", "80", "lonely-error")
        data = await open_half(fwd.conn, "data", "80", "lonely-data")
        assert await error.read_all() == b"timed out waiting for the streams of lonely-error"
        assert await fwd.conn.client.wait_reset(data.id) == RstStatus.CANCEL
        assert fwd.handled == []


async def test_a_failing_handler_reports_and_closes_its_pair_only() -> None:
    async def flaky(pair: PortStream) -> None:
        if pair.port == 1:
            raise ConnectionRefusedError("nothing listens")
        await echo(pair)

    async with forwarding(flaky) as fwd:
        error, data = await open_pair(fwd.conn, 1, "bad")
        assert await error.read_all() == b"error forwarding port 1: nothing listens"
        assert await data.read_all() == b""
        _, good = await open_pair(fwd.conn, 2, "good")
        await good.write(b"alive")
        await good.close()
        assert await good.read_all() == b"alive"


async def test_handler_reports_its_own_error() -> None:
    async def refuse(pair: PortStream) -> None:
        await pair.report_error("connection refused")

    async with forwarding(refuse) as fwd:
        error, data = await open_pair(fwd.conn, 5432, "1")
        assert await error.read_all() == b"connection refused"
        assert await data.read_all() == b""


async def test_clients_without_request_ids_pair_by_stream_id() -> None:
    async with forwarding() as fwd:
        error = await open_half(fwd.conn, "error", "80", None)
        data = await open_half(fwd.conn, "data", "80", None)
        assert (error.id, data.id) == (1, 3)
        await data.write(b"old client")
        await data.close()
        assert await data.read_all() == b"old client"


async def test_serving_ends_with_the_session_and_waits_for_handlers() -> None:
    release = asyncio.Event()
    finished = []

    async def slow(pair: PortStream) -> None:
        await pair.read()  # b"" once the client is gone
        await release.wait()
        finished.append(pair.port)

    async with connected() as conn:
        server = asyncio.create_task(serve_port_forward(conn.session, slow))
        await open_pair(conn, 7, "1")
        await open_half(conn, "data", "8", "2")  # never completed: dropped at the end
        await conn.client.close()
        await conn.session.wait_ended()
        assert not server.done()
        release.set()
        await server
        assert finished == [7]
