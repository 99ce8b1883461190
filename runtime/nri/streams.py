"""The two halves of a byte stream that ttrpc and the NRI multiplexer run over.

They are the parts of asyncio's StreamReader and StreamWriter that those need, so a unix
socket's pair fits as it is, and a multiplexed connection (runtime/nri/mux.py) fits both.
"""

from __future__ import annotations

from typing import Protocol


class ByteReader(Protocol):
    async def readexactly(self, n: int, /) -> bytes:
        """Exactly n bytes; asyncio.IncompleteReadError at the end of the stream (with what
        came before it), a ConnectionError if the stream broke."""
        ...


class ByteWriter(Protocol):
    def write(self, data: bytes, /) -> None:
        """Queue data in full: what one call writes is never interleaved with another's."""
        ...

    async def drain(self) -> None:
        """Wait while the peer is not reading (back-pressure)."""
        ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...
