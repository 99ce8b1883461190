"""A pod's network namespace as network/ uses it: stepping in from a worker thread, checking
a pin, bringing up loopback. Pinning and the other namespaces are runtime/host/namespaces.py.

setns acts on the calling thread only, so a worker thread can step into a namespace and back
while the rest of the process stays where it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from network import linux


@contextmanager
def in_netns(pin: Path) -> Iterator[None]:
    """Run the block in the network namespace pinned at `pin`; the thread returns afterwards."""
    current = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(target, linux.CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            linux.setns(current, linux.CLONE_NEWNET)
    finally:
        os.close(current)


def is_pinned(pin: Path) -> bool:
    """True when `pin` is a live namespace bind mount (nsfs), not a leftover plain file."""
    try:
        return os.stat(pin).st_dev != os.stat(pin.parent).st_dev
    except FileNotFoundError:
        return False


def bring_up_loopback() -> None:
    """Set `lo` up in the calling thread's network namespace."""
    # Imported here: pins are checked at start, long before netlink is needed (~8 MB).
    from pyroute2 import IPRoute  # noqa: PLC0415

    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=index, state="up")
