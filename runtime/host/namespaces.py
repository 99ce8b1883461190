"""A pod's namespaces pinned by bind mounts, as `ip netns` and CRI-O pin them.

A pod's namespaces must outlive every process in it, so each one is bind-mounted onto a file.
The functions here act on the calling thread only: net, ipc, uts and pid-for-children are
per-thread, so a worker thread can step into a namespace and back while the rest of the
process stays where it is.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from runtime.host import linux

NAMESPACE_FLAGS = {
    "net": linux.CLONE_NEWNET,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "pid": linux.CLONE_NEWPID,
}
# unshare(CLONE_NEWPID) changes where the thread's children go, not the thread itself.
_PROC_NAME = {"pid": "pid_for_children"}


def _thread_ns_file(kind: str) -> str:
    return f"/proc/thread-self/ns/{_PROC_NAME.get(kind, kind)}"


@contextmanager
def _returning_to_current(kinds: Sequence[str]) -> Iterator[None]:
    saved = {kind: os.open(_thread_ns_file(kind), os.O_RDONLY | os.O_CLOEXEC) for kind in kinds}
    try:
        yield
    finally:
        try:
            for kind, fd in saved.items():
                linux.setns(fd, NAMESPACE_FLAGS[kind])
        finally:
            for fd in saved.values():
                os.close(fd)


@contextmanager
def unshared(kinds: Sequence[str]) -> Iterator[None]:
    """Run the block in fresh namespaces of the given kinds; the thread returns afterwards."""
    if not kinds:
        yield
        return
    flags = 0
    for kind in kinds:
        flags |= NAMESPACE_FLAGS[kind]
    with _returning_to_current(kinds):
        linux.unshare(flags)
        yield


@contextmanager
def entered(pins: Mapping[str, Path]) -> Iterator[None]:
    """Run the block inside pinned namespaces (kind -> pin path)."""
    with _returning_to_current(list(pins)):
        for kind, pin in pins.items():
            fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, NAMESPACE_FLAGS[kind])
            finally:
                os.close(fd)
        yield


def pin_current(kind: str, pin: Path) -> None:
    """Bind-mount the calling thread's namespace of `kind` onto `pin`."""
    pin.parent.mkdir(parents=True, exist_ok=True)
    pin.touch(mode=0o444, exist_ok=True)
    try:
        linux.mount(_thread_ns_file(kind), str(pin), None, linux.MS_BIND, None)
    except OSError:
        pin.unlink(missing_ok=True)
        raise


def unpin(pin: Path) -> None:
    """Release a pin; a pin that is already gone is fine, so recovery can call this blindly."""
    try:
        linux.umount(str(pin), linux.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    pin.unlink(missing_ok=True)
