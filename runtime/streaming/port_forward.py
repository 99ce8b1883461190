"""Port-forward: one forwarded connection, from the client's stream to localhost:PORT inside
the pod's network namespace, as kubelet's runtimes do it (IPv4 first, then IPv6).

The socket is created by a worker thread that steps into the netns (a socket belongs to the
netns it was created in, for life); the copying then runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import structlog

from network.netns import in_netns
from runtime.streaming.streams import PortStream

log = structlog.get_logger(__name__)

# Large reads keep the per-chunk cost of the copy small against the bytes moved.
_CHUNK = 256 * 1024
# A connect to localhost answers at once; only a full accept backlog makes it wait.
_CONNECT_TIMEOUT_S = 10.0
_LOCALHOSTS = ((socket.AF_INET, "127.0.0.1", "IPv4"), (socket.AF_INET6, "::1", "IPv6"))


async def forward_port(netns_pin: str | None, stream: PortStream) -> None:
    """Connect to localhost:stream.port in the netns pinned at netns_pin (None: the host's,
    for a host-network pod) and copy both ways. Returns once the pod's side has closed and
    that end was passed on; the client closing its side only half-closes the connection.
    Nothing listening: the client gets the error on its error stream."""
    connecting = asyncio.ensure_future(asyncio.to_thread(_connect, netns_pin, stream.port))
    try:
        sock = await asyncio.shield(connecting)
    except _Unreachable as exc:
        log.debug("port forward: nothing listening", port=stream.port, netns=netns_pin)
        await stream.report_error(str(exc))
        return
    except asyncio.CancelledError:
        # The thread connects regardless: its socket must not be left open.
        connecting.add_done_callback(_close_connected)
        raise
    try:
        reader, writer = await asyncio.open_connection(sock=sock, limit=2 * _CHUNK)
    except BaseException:
        sock.close()
        raise
    inbound = asyncio.ensure_future(_to_pod(stream, writer))
    try:
        await _from_pod(reader, stream)
    finally:
        inbound.cancel()
        await asyncio.gather(inbound, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class _Unreachable(Exception):
    """Nothing accepted the connection, on either address."""


def _connect(netns_pin: str | None, port: int) -> socket.socket:
    where = f"inside namespace {netns_pin}" if netns_pin else "in the host network namespace"
    failures = []
    with _netns(netns_pin):
        for family, address, label in _LOCALHOSTS:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:  # a kernel without IPv6
                failures.append(f"{label}: {_reason(exc)}")
                continue
            try:
                sock.settimeout(_CONNECT_TIMEOUT_S)
                sock.connect((address, port))
            except OSError as exc:
                sock.close()
                failures.append(f"{label}: {_reason(exc)}")
                continue
            sock.setblocking(False)
            return sock
    raise _Unreachable(f"failed to connect to localhost:{port} {where}, {', '.join(failures)}")


@contextlib.contextmanager
def _netns(pin: str | None) -> Iterator[None]:
    if pin is None:
        yield
        return
    with in_netns(Path(pin)):
        yield


def _close_connected(connecting: asyncio.Future[socket.socket]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


async def _from_pod(reader: asyncio.StreamReader, stream: PortStream) -> None:
    try:
        while data := await reader.read(_CHUNK):
            await stream.write(data)
    except ConnectionError:
        return  # reset by the pod, or the client is gone: nothing more to pass on
    await stream.close_write()


async def _to_pod(stream: PortStream, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await stream.read():
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass  # the pod reset the connection: _from_pod sees it too
