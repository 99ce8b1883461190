"""Port-forward over SPDY, as kubelet's portforward server does it: for each forwarded
connection the client opens an `error` and a `data` stream with the same `port` and
`requestid` headers. Each complete pair is handed to the caller's handler in a task of its own;
one pair failing leaves the others alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import structlog

from cri.streaming.spdy import SpdySession, SpdyStream
from cri.streaming.spdy_frames import RstStatus, SpdyStreamClosed
from runtime.streaming.streams import PortStream

PROTOCOL = "portforward.k8s.io"
PAIR_TIMEOUT_S = 30.0  # kubelet's stream creation timeout

log = structlog.get_logger("moorage.streaming")


class SpdyPortStream:
    """A PortStream over one pair. write() raises ConnectionError (SpdyStreamClosed) once
    the client has reset the data stream or gone, so a copy from the pod can stop."""

    def __init__(self, port: int, data: SpdyStream, error: SpdyStream) -> None:
        self._port = port
        self._data = data
        self._error = error

    @property
    def port(self) -> int:
        return self._port

    async def read(self) -> bytes:
        return await self._data.read()

    async def write(self, data: bytes) -> None:
        await self._data.write(data)

    async def close_write(self) -> None:
        await self._data.close()

    async def report_error(self, message: str) -> None:
        await _report(self._error, message)

    async def close(self) -> None:
        await self._data.close()
        await self._error.close()


Handler = Callable[[PortStream], Awaitable[None]]


async def serve_port_forward(
    session: SpdySession,
    handle: Handler,
    *,
    ports: Collection[int] = (),
    pair_timeout_s: float = PAIR_TIMEOUT_S,
) -> None:
    """Pair the client's streams and run handle(pair) for each, until the session ends and
    every handler has returned; `session.run()` must be running. A non-empty `ports` limits
    which ports may be forwarded. After its handler, a pair's streams are closed."""
    async with asyncio.TaskGroup() as tasks:
        pairing = _Pairing(handle, frozenset(ports), pair_timeout_s, tasks)
        try:
            while (stream := await session.accept()) is not None:
                await pairing.add(stream)
        finally:
            await pairing.drop_incomplete()


@dataclass
class _Pending:
    expiry: asyncio.Task[None]
    data: SpdyStream | None = None
    error: SpdyStream | None = None


class _Pairing:
    def __init__(
        self,
        handle: Handler,
        ports: frozenset[int],
        pair_timeout_s: float,
        tasks: asyncio.TaskGroup,
    ) -> None:
        self._handle = handle
        self._ports = ports
        self._pair_timeout_s = pair_timeout_s
        self._tasks = tasks
        self._pending: dict[str, _Pending] = {}

    async def add(self, stream: SpdyStream) -> None:
        kind = stream.headers.get("streamtype", "")
        port = _port(stream.headers.get("port", ""))
        if kind not in ("data", "error") or port is None:
            await stream.reset(RstStatus.REFUSED_STREAM)
            return
        request_id = stream.headers.get("requestid") or _legacy_request_id(kind, stream.id)
        pending = self._pending.get(request_id)
        if pending is None:
            expiry = self._tasks.create_task(self._expire(request_id))
            pending = self._pending[request_id] = _Pending(expiry)
        if getattr(pending, kind) is not None:
            await stream.reset(RstStatus.PROTOCOL_ERROR)
            return
        try:
            await stream.reply()
        except SpdyStreamClosed:
            return  # reset by the client already; the pair will expire
        if self._pending.get(request_id) is not pending:
            await stream.reset(RstStatus.CANCEL)  # the pair expired while we replied
            return
        setattr(pending, kind, stream)
        if pending.data is None or pending.error is None:
            return
        del self._pending[request_id]
        pending.expiry.cancel()
        # kubelet forwards the data stream's port; a well-behaved client sends the same twice.
        pair = SpdyPortStream(int(pending.data.headers["port"]), pending.data, pending.error)
        self._tasks.create_task(self._forward(pair))

    async def drop_incomplete(self) -> None:
        for pending in self._pending.values():
            pending.expiry.cancel()
            for stream in (pending.data, pending.error):
                if stream is not None:
                    await stream.reset(RstStatus.CANCEL)
        self._pending.clear()

    async def _forward(self, pair: SpdyPortStream) -> None:
        try:
            if self._ports and pair.port not in self._ports:
                await pair.report_error(f"port {pair.port} is not forwarded for this pod")
                return
            await self._handle(pair)
        except SpdyStreamClosed:
            pass  # the client went away mid-copy: nothing to report, nobody to report to
        except Exception as exc:  # one connection failing must not end the others
            log.warning("port forward failed", port=pair.port, error=repr(exc))
            await pair.report_error(f"error forwarding port {pair.port}: {exc}")
        finally:
            await pair.close()

    async def _expire(self, request_id: str) -> None:
        await asyncio.sleep(self._pair_timeout_s)
        pending = self._pending.pop(request_id)
        if pending.error is not None:
            await _report(pending.error, f"timed out waiting for the streams of {request_id}")
        if pending.data is not None:
            await pending.data.reset(RstStatus.CANCEL)


async def _report(error_stream: SpdyStream, message: str) -> None:
    with contextlib.suppress(SpdyStreamClosed):
        await error_stream.write(message.encode())
    await error_stream.close()


def _port(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()):
        return None
    port = int(text)
    return port if 0 < port <= 0xFFFF else None


def _legacy_request_id(kind: str, stream_id: int) -> str:
    """Clients before requestid opened error then data, so their ids differ by 2."""
    return str(stream_id if kind == "error" else stream_id - 2)
