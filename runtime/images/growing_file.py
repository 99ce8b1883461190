"""A blob read by the unpacking thread while its download is still being written.

The download file itself is the buffer between the two, so the download never waits for the
unpacker and memory stays flat however large the layer. What the reader gets is only trusted
once the download it followed completed and verified: a retried download (which rewrites the
file from the start) or a failed one voids the read, and the caller unpacks again from the
finished blob or gives up.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class DownloadAbandoned(Exception):
    """The download being followed restarted or failed; what was read is void."""


class GrowingFile:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._attempt = 0
        self._available = 0
        self._complete = False
        self._abandoned = False
        self._followed: int | None = None
        self._fd: int | None = None
        self._offset = 0

    def follow(self, path: Path) -> None:
        """Create and open the file the writer is about to download into (blocking). Opened
        now, it stays readable when the finished download is renamed into the store."""
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self._changed:
            self._fd = fd

    def progress(self, attempt: int, written: int) -> None:
        """The writer has `written` bytes of download attempt `attempt` on disk."""
        with self._changed:
            self._attempt, self._available = attempt, written
            self._changed.notify_all()

    def finish(self) -> None:
        """The download completed and verified: the reader may see the end of the file."""
        with self._changed:
            self._complete = True
            self._changed.notify_all()

    def abandon(self) -> None:
        with self._changed:
            self._abandoned = True
            self._changed.notify_all()

    def read(self, size: int = -1, /) -> bytes:
        """Up to size bytes, waiting while the download has none past the read offset; b"" only
        at the end of a completed download."""
        with self._changed:
            while True:
                if self._abandoned or self._followed not in (None, self._attempt):
                    raise DownloadAbandoned
                if self._available > self._offset or self._complete:
                    break
                self._changed.wait()
            if self._followed is None and self._available:
                self._followed = self._attempt
            ready = self._available - self._offset
            fd = self._fd
        if not ready:
            return b""
        assert fd is not None
        data = os.pread(fd, ready if size < 0 else min(size, ready), self._offset)
        if not data:
            # Truncated under us: a retry began rewriting the file.
            raise DownloadAbandoned
        self._offset += len(data)
        return data

    def close(self) -> None:
        with self._changed:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
