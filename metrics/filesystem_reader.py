"""The filesystem under a directory: its device, size and inodes, for the container_fs_*
capacity series."""

from __future__ import annotations

import os

from metrics.model import FilesystemStats


def read_filesystem(path: str) -> FilesystemStats | None:
    try:
        device = os.stat(path).st_dev
        figures = os.statvfs(path)
    except OSError:
        return None
    return FilesystemStats(
        major=os.major(device),
        minor=os.minor(device),
        capacity_bytes=figures.f_blocks * figures.f_frsize,
        inodes_total=figures.f_files,
        inodes_free=figures.f_ffree,
    )
