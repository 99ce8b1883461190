"""The streaming server: the HTTP endpoint Exec, Attach and PortForward URLs point at.

Each connection is one session: the request names a kind and a token; the token's request
(held by the RequestCache since the RPC) says what to run; the Upgrade header says over what.
One failing session never disturbs the others, and the server stops with the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from cri.streaming.requests import PATHS, PortForwardRequest, RequestCache, StreamRequest

if TYPE_CHECKING:
    from cri.streaming.sessions import SessionBackend

log = structlog.get_logger("moorage.streaming")
# The reader's limit also caps how much it buffers before pausing the socket: port-forward
# throughput wants it well above a request head's size (which read_request checks itself).
READ_BUFFER_BYTES = 256 * 1024


class StreamingServer:
    def __init__(self, address: str, backend: SessionBackend) -> None:
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._backend = backend
        self._requests = RequestCache()
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.base_url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connected, self._host, self._port, limit=READ_BUFFER_BYTES
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        log.info("streaming server", url=self.base_url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def url_for(self, request: StreamRequest) -> str:
        token = self._requests.insert(request)
        return f"{self.base_url}/{PATHS[type(request)]}/{token}"

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels a session; asyncio would log it as the handler's failure.
            return
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # HTTP, SPDY and WebSocket load with the first session, not at start: many nodes
        # never stream, and a restarted agent serves sooner without them.
        from cri.streaming import http_front, sessions  # noqa: PLC0415

        try:
            http = await http_front.read_request(reader)
            kind, _, token = http.path.strip("/").partition("/")
            request = self._requests.consume(token) if token else None
            if request is None or PATHS[type(request)] != kind:
                raise http_front.HttpError(404, "unknown or expired streaming URL")
            bound = log.bind(session=kind, **_ids(request))
            bound.debug("streaming session")
            session = sessions.Session(http, request, reader, writer, self._backend, bound)
            await sessions.serve_session(session)
        except http_front.HttpError as exc:
            await http_front.send_error(writer, exc)
        except Exception as exc:
            # One broken session must not end the server; the traceback is for its bug report.
            log.warning("streaming session failed", error=repr(exc), exc_info=exc)


def _ids(request: StreamRequest) -> dict[str, str]:
    if isinstance(request, PortForwardRequest):
        return {"sandbox_id": request.sandbox_id}
    return {"container_id": request.container_id}
