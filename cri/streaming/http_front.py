"""The HTTP/1.1 part of a streaming connection: the upgrade request in, a plain response or a
101 out. Parsing and serialising are h11's; what follows the upgrade is the protocols'."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import h11

# Far above what a client-go upgrade request carries; a bigger head is refused unread.
MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0
_HEAD_END = b"\r\n\r\n"


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


@dataclass(frozen=True)
class UpgradeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    # Lowercased names; a header sent on several lines has several values.
    headers: dict[str, list[str]]
    # The request head as received; bytes past it stay in the reader for the protocol.
    raw_head: bytes

    def tokens(self, name: str) -> list[str]:
        """A header's comma-separated tokens over all its lines, stripped, in order."""
        return [t.strip() for v in self.headers.get(name, []) for t in v.split(",") if t.strip()]

    def upgrades_to(self, protocol: str) -> bool:
        return protocol.lower() in (t.lower() for t in self.tokens("upgrade"))


async def read_request(reader: asyncio.StreamReader) -> UpgradeRequest:
    try:
        head = await asyncio.wait_for(reader.readuntil(_HEAD_END), HEAD_TIMEOUT_S)
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request header fields too large") from None
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        raise HttpError(400, "incomplete request") from None
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(431, "request header fields too large")
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    connection.receive_data(head)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError as exc:
        raise HttpError(400, f"malformed request: {exc}") from None
    if not isinstance(event, h11.Request):
        raise HttpError(400, "malformed request")
    headers: dict[str, list[str]] = {}
    for name, value in event.headers:
        headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    target = urlsplit(event.target.decode("latin-1"))
    return UpgradeRequest(
        method=event.method.decode("ascii"),
        path=target.path,
        query=parse_qs(target.query),
        headers=headers,
        raw_head=head,
    )


def switching_protocols(headers: Sequence[tuple[str, str]]) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_error(writer: asyncio.StreamWriter, error: HttpError) -> None:
    """Answer with error's status and message as text, then close the connection."""
    body = (error.message + "\n").encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *error.headers,
    ]
    reason = _REASONS.get(error.status, "Error")
    lines = [f"HTTP/1.1 {error.status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    with contextlib.suppress(ConnectionError):
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
