"""Container exits as conmon reports them: one file per container in the exits dir.

Watched with inotify on the event loop, never polled: a file closed after writing
(IN_CLOSE_WRITE) or renamed into place (IN_MOVED_TO) is read and reported at once. The pid of
a container or its conmon is no use here: PID 1 on some hosts reaps orphans seconds late.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

import structlog

from runtime.oci.exit_files import read_exit_file

log = structlog.get_logger(__name__)

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000
_IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
# struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[]; }
_EVENT = struct.Struct("iIII")
# conmon writes ID.XXXXXX (GLib's g_file_set_contents) and renames it to ID: the temporary
# file's IN_CLOSE_WRITE must not be taken for a container called "ID.XXXXXX".
_TEMPORARY = re.compile(r"\.[A-Za-z0-9]{6}$")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int

ExitCallback = Callable[[str, int], None]


class ExitWatcher:
    """Calls on_exit(container_id, exit_code) for each exit file.

    A container may be reported more than once (files present at start, a rescan after the
    kernel's event queue overflowed): on_exit must be idempotent.
    """

    def __init__(self, exits_dir: Path, on_exit: ExitCallback) -> None:
        self.exits_dir = exits_dir
        self._on_exit = on_exit
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Watch from now on, then report the files already there (exits while we were away).

        Watching first means a file written between the two steps is seen, at worst twice.
        """
        self.exits_dir.mkdir(parents=True, exist_ok=True)
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise _os_error("inotify_init1")
        if _libc.inotify_add_watch(fd, bytes(self.exits_dir), _IN_CLOSE_WRITE | _IN_MOVED_TO) < 0:
            error = _os_error(f"inotify_add_watch {self.exits_dir}")
            os.close(fd)
            raise error
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._drain)
        self._rescan()

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1

    def _drain(self) -> None:
        names: list[str] = []
        overflowed = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            if not data:
                break
            for mask, name in _parse_events(data):
                if mask & _IN_Q_OVERFLOW:
                    overflowed = True
                elif name and not mask & _IN_ISDIR:
                    names.append(name)
        if overflowed:
            log.warning("inotify queue overflowed: rescanning exit files", dir=str(self.exits_dir))
            self._rescan()
            return
        for name in dict.fromkeys(names):
            self._report(name)

    def _rescan(self) -> None:
        for entry in os.scandir(self.exits_dir):
            if entry.is_file(follow_symlinks=False):
                self._report(entry.name)

    def _report(self, name: str) -> None:
        if _TEMPORARY.search(name):
            return
        try:
            recorded = read_exit_file(self.exits_dir / name)
        except (OSError, ValueError) as exc:
            log.warning("unreadable exit file", container_id=name, error=str(exc))
            return
        if recorded is None:
            # A writer's temporary file, renamed away before we read it.
            return
        exit_code = recorded.code
        try:
            self._on_exit(name, exit_code)
        except Exception:
            # One failing report must not stop the watcher for every other container.
            log.exception("exit callback failed", container_id=name, exit_code=exit_code)


def _parse_events(data: bytes) -> list[tuple[int, str]]:
    events = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        raw = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append((mask, os.fsdecode(raw)))
    return events


def _os_error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")
