"""Interface counters inside a pinned network namespace.

The network namespace is per thread, so a throwaway thread steps into the pod's namespace and
reads /proc/thread-self/net/dev there; it exits afterwards and nobody else ever runs in it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading

from metrics.model import InterfaceStats

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# setns fails with these when the pin is no longer a namespace (unmounted, left as a plain file).
_NOT_A_NAMESPACE = (errno.EINVAL, errno.EBADF)


def read_interfaces(netns_path: str) -> list[InterfaceStats] | None:
    """Counters of every interface but `lo` in the namespace pinned at `netns_path`, or None
    when the pin is gone. Blocks for the few hundred microseconds a thread takes."""
    outcome: list[list[InterfaceStats] | None] = []
    failure: list[BaseException] = []

    def in_namespace() -> None:
        try:
            outcome.append(_read_in(netns_path))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=in_namespace, name="moorage-netns-read", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _read_in(netns_path: str) -> list[InterfaceStats] | None:
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        _setns(fd, _CLONE_NEWNET)
    except OSError as exc:
        if exc.errno in _NOT_A_NAMESPACE:
            return None
        raise
    finally:
        os.close(fd)
    with open("/proc/thread-self/net/dev", "rb") as dev:
        return parse_net_dev(dev.read().decode("ascii", "replace"))


def _setns(fd: int, nstype: int) -> None:
    if sys.version_info >= (3, 12):
        os.setns(fd, nstype)
        return
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def parse_net_dev(text: str) -> list[InterfaceStats]:
    """/proc/net/dev as the kernel prints it: two header lines, then `name: 16 counters`."""
    interfaces: list[InterfaceStats] = []
    for line in text.splitlines()[2:]:
        # Interface names cannot contain ':', so the first one ends the name.
        name, _, counters = line.partition(":")
        name = name.strip()
        fields = counters.split()
        if name == "lo" or len(fields) < 16:
            continue
        rx = [int(f) for f in fields[:4]]
        tx = [int(f) for f in fields[8:12]]
        interfaces.append(InterfaceStats(name, *rx, *tx))
    return interfaces
