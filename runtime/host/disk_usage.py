"""Bytes and inodes used below directories, for ImageFsInfo and the writable-layer figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DiskUsage:
    path: Path
    used_bytes: int
    inodes_used: int


def disk_usage(path: Path, *more: Path) -> DiskUsage:
    """Bytes and inodes below the paths, counting each hard-linked inode once; reported
    under the first path."""
    seen: set[tuple[int, int]] = set()
    used = 0
    for dirpath, dirnames, filenames in (entry for p in (path, *more) for entry in os.walk(p)):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                used += st.st_blocks * 512
    return DiskUsage(path, used, len(seen))
