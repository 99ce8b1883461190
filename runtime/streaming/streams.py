"""What an exec, attach or port-forward session sees of its remote client, whatever protocol
carries it (SPDY/3.1 or WebSocket, both in cri/streaming/). The runtime side drives these;
the protocol side implements them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class StdioClient(Protocol):
    """The client of one exec or attach: the streams it asked for, and its terminal.

    A stream the client did not ask for is never read or written. Every method returns or
    ends quietly once the client has gone; `gone` tells whether it has.
    """

    @property
    def stdin(self) -> bool: ...

    @property
    def stdout(self) -> bool: ...

    @property
    def stderr(self) -> bool: ...

    @property
    def tty(self) -> bool: ...

    @property
    def gone(self) -> bool: ...

    async def read_stdin(self) -> bytes:
        """The next bytes of stdin; b"" once the client closed stdin or went away."""
        ...

    async def write_stdout(self, data: bytes) -> None: ...

    async def write_stderr(self, data: bytes) -> None: ...

    def resizes(self) -> AsyncIterator[TerminalSize]:
        """Terminal sizes as the client sends them; ends when the client goes away."""
        ...

    async def wait_gone(self) -> None:
        """Return once the client has gone away (closed the connection or reset it)."""
        ...


class PortStream(Protocol):
    """One forwarded connection of a port-forward session: the client's data stream for it
    and its error stream."""

    @property
    def port(self) -> int: ...

    async def read(self) -> bytes:
        """The client's next bytes; b"" once it closed its side or went away."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close_write(self) -> None:
        """No more bytes to the client (the pod side closed)."""
        ...

    async def report_error(self, message: str) -> None:
        """Tell the client this connection failed (e.g. nothing listens on the port)."""
        ...
