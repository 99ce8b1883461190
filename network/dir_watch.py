"""Whether anything in a few directories may have changed, known without touching them.

kubelet asks for Status every few seconds and NetworkReady depends on the CNI conf and bin
dirs; scanning them per call costs a stat per file. An inotify descriptor records every
change instead: asking drains it with one non-blocking read, which sees every change made
before the question (the kernel queues the event before the write returns), so a file
dropped in is seen by the very next call, without a loop callback racing it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_DIR_EVENTS = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)
# A directory that does not exist yet is awaited in its parent.
_PARENT_EVENTS = _IN_CREATE | _IN_MOVED_TO

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int


class DirWatch:
    def __init__(self, dirs: Sequence[Path]) -> None:
        self._dirs = tuple(dirs)
        self._fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        # The owner (a network driver) has no close of its own: the descriptor goes with it.
        if self._fd >= 0:
            weakref.finalize(self, os.close, self._fd)
        self._stale = True

    def changed(self) -> bool:
        """True on the first call, after any change, and on every call where the dirs
        cannot be watched (no inotify, or neither a dir nor its parent exists)."""
        if self._fd < 0:
            return True
        if self._drain():
            self._stale = True
        if not self._stale:
            return False
        # Watch before the caller reads: what changes after its read makes a new event.
        self._stale = not self._arm()
        return True

    def _drain(self) -> bool:
        seen = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return seen
            if not data:
                return seen
            seen = True

    def _arm(self) -> bool:
        armed = True
        for directory in self._dirs:
            if self._add(directory, _DIR_EVENTS):
                continue
            if not self._add(directory.parent, _PARENT_EVENTS):
                armed = False
                continue
            # Created between the two tries: watched now, or its creation is an event.
            self._add(directory, _DIR_EVENTS)
        return armed

    def _add(self, path: Path, mask: int) -> bool:
        return bool(_libc.inotify_add_watch(self._fd, bytes(path), mask) >= 0)
