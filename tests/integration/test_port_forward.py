"""Port-forward into real network namespaces: listeners served from the test's event loop on
sockets created inside a pod netns (a socket stays in the netns it was created in)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from network.netns import bring_up_loopback
from runtime.host.namespaces import entered, pin_current, unpin, unshared
from runtime.settings import RuntimeSettings
from runtime.streaming.port_forward import forward_port
from tests.netutil import in_new_thread

WAIT_S = 10.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class FakePortStream:
    """The client's side of one forwarded connection, in memory."""

    def __init__(self, port: int, *, keep: bool = True) -> None:
        self._port = port
        self._keep = keep
        self._sends: asyncio.Queue[bytes] = asyncio.Queue()
        self.received = bytearray()
        self.received_bytes = 0
        self.write_closed = False
        self.errors: list[str] = []

    @property
    def port(self) -> int:
        return self._port

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self._sends.put_nowait(chunk)

    def close(self) -> None:
        self._sends.put_nowait(b"")

    async def read(self) -> bytes:
        return await self._sends.get()

    async def write(self, data: bytes) -> None:
        assert not self.write_closed
        self.received_bytes += len(data)
        if self._keep:
            self.received += data

    async def close_write(self) -> None:
        self.write_closed = True

    async def report_error(self, message: str) -> None:
        self.errors.append(message)


@pytest.fixture
def pod_netns(settings: RuntimeSettings) -> Iterator[str]:
    """A fresh pinned network namespace with its loopback up, as a pod has."""
    pin = settings.layout.pin_path("net", "pod")

    def build() -> None:
        with unshared(["net"]):
            bring_up_loopback()
            pin_current("net", pin)

    in_new_thread(build)
    try:
        yield str(pin)
    finally:
        unpin(pin)


@contextlib.asynccontextmanager
async def listener(
    netns_pin: str | None, handle: Handler, address: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve handle on address:<free port> inside the netns; yields the port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def listen() -> socket.socket:
        with entered({"net": Path(netns_pin)}) if netns_pin else contextlib.nullcontext():
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen()
        return sock

    sock = await asyncio.to_thread(listen)
    server = await asyncio.start_server(handle, sock=sock)
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def shout_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads to the client's end of input, answers in capitals, then closes."""
    data = await reader.read()
    writer.write(data.upper())
    await writer.drain()
    writer.close()


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello from the pod\n")
    writer.close()


async def test_both_directions_with_half_closes(pod_netns: str) -> None:
    async with listener(pod_netns, shout_back) as port:
        stream = FakePortStream(port)
        stream.send(b"hello ", b"pod")
        stream.close()
        await asyncio.wait_for(forward_port(pod_netns, stream), WAIT_S)
    # The pod only answered once our end of input reached it, and its end reached us.
    assert stream.received == b"HELLO POD"
    assert stream.write_closed
    assert stream.errors == []


async def test_the_pod_closing_ends_the_forward_even_if_the_client_stays(
    pod_netns: str,
) -> None:
    async with listener(pod_netns, greet) as port:
        stream = FakePortStream(port)
        await asyncio.wait_for(forward_port(pod_netns, stream), WAIT_S)
    assert stream.received == b"hello from the pod\n"
    assert stream.write_closed


async def test_ipv6_localhost_when_nothing_listens_on_ipv4(pod_netns: str) -> None:
    async with listener(pod_netns, greet, address="::1") as port:
        stream = FakePortStream(port)
        await asyncio.wait_for(forward_port(pod_netns, stream), WAIT_S)
    assert stream.received == b"hello from the pod\n"


async def test_nothing_listening_is_reported_and_other_streams_go_on(pod_netns: str) -> None:
    async with listener(pod_netns, shout_back) as port:
        refused = FakePortStream(port + 1 if port < 65535 else port - 1)
        working = FakePortStream(port)
        working.send(b"still fine")
        working.close()
        await asyncio.wait_for(
            asyncio.gather(forward_port(pod_netns, refused), forward_port(pod_netns, working)),
            WAIT_S,
        )
    (error,) = refused.errors
    assert f"failed to connect to localhost:{refused.port} inside namespace {pod_netns}" in error
    assert "IPv4: connection refused" in error
    assert refused.received == b""
    assert not refused.write_closed
    assert working.received == b"STILL FINE"


async def test_a_host_network_pod_reaches_the_host_localhost() -> None:
    async with listener(None, shout_back) as port:
        stream = FakePortStream(port)
        stream.send(b"host")
        stream.close()
        await asyncio.wait_for(forward_port(None, stream), WAIT_S)
    assert stream.received == b"HOST"


async def test_100_mib_each_way_arrive_whole(pod_netns: str) -> None:
    total = 100 * 1024 * 1024
    chunk = bytes(256 * 1024)
    counted: list[int] = []

    async def count_then_send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = 0
        while data := await reader.read(256 * 1024):
            received += len(data)
        counted.append(received)
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    async with listener(pod_netns, count_then_send) as port:
        stream = FakePortStream(port, keep=False)
        stream.send(*[chunk] * (total // len(chunk)))
        stream.close()
        await asyncio.wait_for(forward_port(pod_netns, stream), 60)
    assert counted == [total]
    assert stream.received_bytes == total
