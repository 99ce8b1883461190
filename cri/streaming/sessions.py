"""One streaming session end to end: the protocol the client upgrades to (SPDY/3.1 or
WebSocket, with the version negotiated as kubelet does), then the exec, attach or
port-forward it was promised, then the final status the client waits for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cri.streaming import spdy_portforward, spdy_stdio, websocket_portforward, websocket_stdio
from cri.streaming.http_front import HttpError, UpgradeRequest, switching_protocols
from cri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest, StreamRequest
from cri.streaming.spdy import SpdySession
from cri.streaming.spdy_stdio import SpdyStdio
from cri.streaming.transport import ByteTransport, StreamTransport
from cri.streaming.websocket import accept
from cri.streaming.websocket_stdio import WebSocketStdio
from cri.streaming.websocket_tunnel import SUBPROTOCOL as SPDY_TUNNEL
from cri.streaming.websocket_tunnel import WebSocketTransport
from runtime.errors import MoorageError
from runtime.streaming.streams import PortStream, StdioClient

_PROTOCOL_HEADER = "x-stream-protocol-version"


class SessionBackend(Protocol):
    async def exec(self, container_id: str, command: list[str], client: StdioClient) -> int: ...

    async def attach(self, container_id: str, client: StdioClient) -> None: ...

    async def forward(self, sandbox_id: str, stream: PortStream) -> None: ...


@dataclass(frozen=True)
class Session:
    """An upgrade request with the stream request its token stood for."""

    http: UpgradeRequest
    request: StreamRequest
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    backend: SessionBackend
    log: Any


async def serve_session(session: Session) -> None:
    http = session.http
    if http.upgrades_to("SPDY/3.1"):
        if http.method not in ("POST", "GET"):
            raise HttpError(405, f"method {http.method} not allowed: POST or GET")
        await _serve_spdy(session)
    elif http.upgrades_to("websocket"):
        if http.method != "GET":
            raise HttpError(405, f"method {http.method} not allowed: WebSocket upgrades are GET")
        await _serve_websocket(session)
    else:
        raise HttpError(
            400, "upgrade required: this endpoint speaks SPDY/3.1 and WebSocket (RFC 6455)"
        )


# -- SPDY ------------------------------------------------------------------------------------


async def _serve_spdy(session: Session) -> None:
    request, writer = session.request, session.writer
    supported = (
        (spdy_portforward.PROTOCOL,)
        if isinstance(request, PortForwardRequest)
        else spdy_stdio.PROTOCOLS
    )
    version = _negotiate(session.http.tokens(_PROTOCOL_HEADER), supported)
    writer.write(
        switching_protocols(
            [
                ("Connection", "Upgrade"),
                ("Upgrade", "SPDY/3.1"),
                ("X-Stream-Protocol-Version", version),
            ]
        )
    )
    await _run_spdy(session, StreamTransport(session.reader, writer), version)


async def _run_spdy(session: Session, transport: ByteTransport, version: str) -> None:
    request, log = session.request, session.log
    spdy = SpdySession(transport)
    runner = asyncio.create_task(spdy.run())
    try:
        if isinstance(request, PortForwardRequest):
            await spdy_portforward.serve_port_forward(
                spdy, _forwarder(session.backend, request, log), ports=request.ports
            )
            return
        try:
            stdio = await spdy_stdio.accept_stdio(
                spdy,
                version,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
                tty=request.tty,
            )
        except spdy_stdio.StreamSetupError as exc:
            log.info("streaming client did not open its streams", error=str(exc))
            return
        await _run_stdio(request, stdio, session.backend, log)
    finally:
        await spdy.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def _negotiate(offered: list[str], supported: tuple[str, ...]) -> str:
    """kubelet's rule: the first protocol the client offers that the server speaks."""
    if not offered:
        raise HttpError(400, "unable to upgrade: X-Stream-Protocol-Version is required")
    for protocol in offered:
        if protocol in supported:
            return protocol
    raise HttpError(
        403,
        f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
        f"server accepts {list(supported)}",
        [("X-Accepted-Stream-Protocol-Versions", p) for p in supported],
    )


# -- WebSocket -------------------------------------------------------------------------------


async def _serve_websocket(session: Session) -> None:
    http, request, reader, writer = session.http, session.request, session.reader, session.writer
    backend, log = session.backend, session.log
    if not isinstance(request, PortForwardRequest):
        ws = await accept(
            reader, writer, http.raw_head, websocket_stdio.SUBPROTOCOLS, allow_no_subprotocol=True
        )
        stdio = await websocket_stdio.open_stdio(
            ws, stdin=request.stdin, stdout=request.stdout, stderr=request.stderr, tty=request.tty
        )
        await _run_stdio(request, stdio, backend, log)
        return
    if SPDY_TUNNEL in http.tokens("sec-websocket-protocol"):
        ws = await accept(reader, writer, http.raw_head, (SPDY_TUNNEL,))
        try:
            await _run_spdy(session, WebSocketTransport(ws), spdy_portforward.PROTOCOL)
        finally:
            await ws.close()
        return
    ports = _query_ports(http) or list(request.ports)
    if not ports:
        raise HttpError(400, "port-forward over WebSocket needs ports: ?port=N&port=M")
    if len(ports) > websocket_portforward.MAX_PORTS:
        raise HttpError(400, f"at most {websocket_portforward.MAX_PORTS} ports per session")
    ws = await accept(
        reader,
        writer,
        http.raw_head,
        websocket_portforward.SUBPROTOCOLS,
        allow_no_subprotocol=True,
    )
    await websocket_portforward.serve_port_forward(ws, ports, _forwarder(backend, request, log))


def _query_ports(http: UpgradeRequest) -> list[int]:
    ports = []
    for value in http.query.get("port", []):
        if not value.isdigit() or not 0 < int(value) <= 65535:
            raise HttpError(400, f"port {value!r} is not a port number")
        ports.append(int(value))
    return ports


# -- what runs in the session ----------------------------------------------------------------


async def _run_stdio(
    request: ExecRequest | AttachRequest,
    client: SpdyStdio | WebSocketStdio,
    backend: SessionBackend,
    log: Any,
) -> None:
    try:
        if isinstance(request, ExecRequest):
            exit_code = await backend.exec(request.container_id, list(request.command), client)
        else:
            await backend.attach(request.container_id, client)
            exit_code = 0
    except MoorageError as exc:
        log.info("streaming session failed", error=str(exc))
        with contextlib.suppress(ConnectionError):
            await client.fail(str(exc))
        return
    log.debug("streaming session done", exit_code=exit_code)
    if not client.gone:
        with contextlib.suppress(ConnectionError):
            await client.finish(exit_code)


def _forwarder(
    backend: SessionBackend, request: PortForwardRequest, log: Any
) -> Callable[[PortStream], Awaitable[None]]:
    async def forward(stream: PortStream) -> None:
        log.debug("port-forward connection", port=stream.port)
        await backend.forward(request.sandbox_id, stream)

    return forward
