"""Block devices as cAdvisor names them, from sysfs: /dev/sda for 8:0, and the disk a
partition belongs to (cgroup I/O accounting counts per disk, filesystems live on partitions)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

_SYSFS = "/sys/dev/block"


@functools.lru_cache(maxsize=256)
def block_device_name(major: int, minor: int) -> str:
    """The device node cAdvisor would name, e.g. /dev/sda; /dev/block/MAJ:MIN when sysfs does
    not know the device (an overlay's or a tmpfs's anonymous device, say)."""
    try:
        uevent = Path(f"{_SYSFS}/{major}:{minor}/uevent").read_text()
    except OSError:
        return f"/dev/block/{major}:{minor}"
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return f"/dev/{value}"
    return f"/dev/block/{major}:{minor}"


@functools.lru_cache(maxsize=256)
def whole_disk(major: int, minor: int) -> tuple[int, int]:
    """The disk holding a partition; any other device is its own."""
    entry = os.path.realpath(f"{_SYSFS}/{major}:{minor}")
    if not os.path.exists(f"{entry}/partition"):
        return major, minor
    try:
        parent = Path(entry).parent.joinpath("dev").read_text().strip()
        disk_major, _, disk_minor = parent.partition(":")
        return int(disk_major), int(disk_minor)
    except (OSError, ValueError):
        return major, minor
