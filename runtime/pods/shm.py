"""The per-pod /dev/shm tmpfs."""

from __future__ import annotations

import errno
from pathlib import Path

from runtime.host import linux


def mount_shm(target: Path, size_bytes: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    linux.mount(
        "shm",
        str(target),
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
        f"mode=1777,size={size_bytes}",
    )


def unmount_if_mounted(target: Path) -> None:
    try:
        linux.umount(str(target), linux.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
