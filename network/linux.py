"""The one syscall network/ needs that Python 3.11's os module lacks: setns, to step into a
pod's network namespace. The runtime's mount and namespace bindings are runtime/host/linux.py;
this package imports nothing of runtime/, so it keeps its own."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
