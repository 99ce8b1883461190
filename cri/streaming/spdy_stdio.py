"""Exec and attach over SPDY, as kubelet's remotecommand server does it: the client opens one
stream per stdio channel (named by its `streamtype` header) plus `error` for the outcome and,
from v3 on with a tty, `resize` for terminal sizes.

client-go opens the streams one at a time and waits for each reply, so each is answered as it
comes. At the end, the outcome goes on the error stream: a metav1.Status as JSON for v4 (the
exit code in its causes), plain text for older versions (nothing on success).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from cri.streaming.spdy import SpdySession, SpdyStream
from cri.streaming.spdy_frames import RstStatus, SpdyStreamClosed
from cri.streaming.status import encode, error_status, exit_status
from runtime.streaming.streams import TerminalSize

V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
PROTOCOLS = (V4, V3, V2, V1)  # preferred first
STREAM_CREATION_TIMEOUT_S = 30.0  # kubelet's default

_RESIZE_PROTOCOLS = (V4, V3)
# A resize message is a few dozen bytes; more unparsed than this is garbage.
_MAX_RESIZE_MESSAGE = 4096


class StreamSetupError(Exception):
    """The client did not open the streams it asked for, in time or at all."""


async def accept_stdio(
    session: SpdySession,
    protocol: str,
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    creation_timeout_s: float = STREAM_CREATION_TIMEOUT_S,
) -> SpdyStdio:
    """Wait for the client's streams and answer each; `session.run()` must be running.
    Streams of another type, or a second of one type, are refused."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown remotecommand protocol {protocol!r}")
    asked = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
    asked["resize"] = tty and protocol in _RESIZE_PROTOCOLS
    wanted = {"error", *(kind for kind, on in asked.items() if on)}
    streams: dict[str, SpdyStream] = {}
    try:
        async with asyncio.timeout(creation_timeout_s):
            while len(streams) < len(wanted):
                stream = await session.accept()
                if stream is None:
                    raise StreamSetupError("the client left before opening its streams")
                kind = stream.headers.get("streamtype", "")
                if kind not in wanted or kind in streams:
                    await stream.reset(RstStatus.REFUSED_STREAM)
                    continue
                await stream.reply()
                streams[kind] = stream
    except TimeoutError:
        raise StreamSetupError(
            f"timed out waiting for streams {sorted(wanted - streams.keys())}"
        ) from None
    except SpdyStreamClosed as exc:
        raise StreamSetupError(f"the client reset a stream while opening: {exc}") from None
    return SpdyStdio(session, protocol, streams, tty=tty)


class SpdyStdio:
    """A StdioClient over the streams of one exec or attach."""

    def __init__(
        self, session: SpdySession, protocol: str, streams: Mapping[str, SpdyStream], *, tty: bool
    ) -> None:
        self._session = session
        self._protocol = protocol
        self._streams = dict(streams)
        self._tty = tty
        self._finished = False

    @property
    def stdin(self) -> bool:
        return "stdin" in self._streams

    @property
    def stdout(self) -> bool:
        return "stdout" in self._streams

    @property
    def stderr(self) -> bool:
        return "stderr" in self._streams

    @property
    def tty(self) -> bool:
        return self._tty

    @property
    def gone(self) -> bool:
        return self._session.ended or any(s.aborted for s in self._streams.values())

    async def read_stdin(self) -> bytes:
        stream = self._streams.get("stdin")
        return b"" if stream is None else await stream.read()

    async def write_stdout(self, data: bytes) -> None:
        await self._write("stdout", data)

    async def write_stderr(self, data: bytes) -> None:
        await self._write("stderr", data)

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        stream = self._streams.get("resize")
        if stream is None:
            await self.wait_gone()
            return
        # client-go's json.Encoder writes one object after another, each ending in "\n".
        decoder = json.JSONDecoder()
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while chunk := await stream.read():
            pending += text.decode(chunk)
            while pending := pending.lstrip():
                try:
                    message, end = decoder.raw_decode(pending)
                except json.JSONDecodeError:
                    if len(pending) > _MAX_RESIZE_MESSAGE:
                        return  # not JSON: stop listening, as kubelet does
                    break  # incomplete: wait for the rest
                pending = pending[end:]
                size = _terminal_size(message)
                if size is None:
                    return
                yield size

    async def wait_gone(self) -> None:
        waiters = [asyncio.ensure_future(self._session.wait_ended())]
        waiters += [asyncio.ensure_future(s.wait_aborted()) for s in self._streams.values()]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def finish(self, exit_code: int) -> None:
        """Report the command's exit code (0: success) and close the streams."""
        if not 0 <= exit_code <= 255:
            raise ValueError(f"exit code {exit_code} outside 0..255")
        await self._end(exit_status(exit_code))

    async def fail(self, message: str) -> None:
        """Report a failure other than an exit code (the command could not run) and close the
        streams; kubelet sends such errors as an InternalError status."""
        await self._end(error_status(message))

    async def _write(self, kind: str, data: bytes) -> None:
        stream = self._streams.get(kind)
        if stream is not None and data:
            with contextlib.suppress(SpdyStreamClosed):
                await stream.write(data)

    async def _end(self, status: dict[str, Any]) -> None:
        if self._finished:
            return
        self._finished = True
        payload = encode(status, as_json=self._protocol == V4)
        for kind, stream in self._streams.items():
            if kind != "error":
                await stream.close()
        await self._write("error", payload)
        await self._streams["error"].close()


def _terminal_size(message: object) -> TerminalSize | None:
    """Go's decoder matches field names regardless of case and leaves missing ones 0."""
    if not isinstance(message, dict):
        return None
    fields = {str(k).lower(): v for k, v in message.items()}
    width, height = fields.get("width", 0), fields.get("height", 0)
    for value in (width, height):
        if type(value) is not int or not 0 <= value <= 0xFFFF:
            return None
    return TerminalSize(width=width, height=height)
