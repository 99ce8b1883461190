"""Checks of CRI LinuxContainerResources before they reach the OCI runtime, so a bad value is
INVALID_ARGUMENT naming its field, not the runtime's raw complaint after half a create.

The bounds are the kernel's (CFS period 1 ms..1 s, quota at least 1 ms, shares 2..262144,
oom_score_adj -1000..1000) and the OCI runtimes' (-1 is "unlimited" for quota and swap).
"""

from __future__ import annotations

import re
from pathlib import Path

from runtime.errors import InvalidArgument
from runtime.resources import Resources

CFS_PERIOD_US = (1_000, 1_000_000)
CFS_QUOTA_MIN_US = 1_000
CPU_SHARES = (2, 262_144)
OOM_SCORE_ADJ = (-1000, 1000)
# The kernel's list format: "0-3,8,10-11".
_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
ONLINE_CPUS = Path("/sys/devices/system/cpu/online")
ONLINE_MEMS = Path("/sys/devices/system/node/online")


def check_resources(resources: Resources, field: str) -> None:
    """Raise InvalidArgument for the first field of `field` (e.g. config.linux.resources)
    that no cgroup would take; 0 and "" mean "not set" and always pass."""
    r = resources
    if r.cpu_period and not CFS_PERIOD_US[0] <= r.cpu_period <= CFS_PERIOD_US[1]:
        low, high = CFS_PERIOD_US
        raise InvalidArgument(f"{field}.cpu_period {r.cpu_period} is outside {low}..{high} µs")
    if r.cpu_quota and r.cpu_quota != -1 and r.cpu_quota < CFS_QUOTA_MIN_US:
        raise InvalidArgument(
            f"{field}.cpu_quota {r.cpu_quota}: at least {CFS_QUOTA_MIN_US} µs, or -1 for no limit"
        )
    if r.cpu_shares and not CPU_SHARES[0] <= r.cpu_shares <= CPU_SHARES[1]:
        raise InvalidArgument(
            f"{field}.cpu_shares {r.cpu_shares} is outside {CPU_SHARES[0]}..{CPU_SHARES[1]}"
        )
    if r.memory_limit_bytes < 0:
        raise InvalidArgument(f"{field}.memory_limit_in_bytes {r.memory_limit_bytes} is negative")
    if r.memory_swap_limit_bytes < -1:
        raise InvalidArgument(
            f"{field}.memory_swap_limit_in_bytes {r.memory_swap_limit_bytes}: "
            "not negative, or -1 for no limit"
        )
    if 0 < r.memory_swap_limit_bytes < r.memory_limit_bytes:
        raise InvalidArgument(
            f"{field}.memory_swap_limit_in_bytes {r.memory_swap_limit_bytes} is below "
            f"memory_limit_in_bytes {r.memory_limit_bytes} (it limits memory plus swap)"
        )
    if not OOM_SCORE_ADJ[0] <= r.oom_score_adj <= OOM_SCORE_ADJ[1]:
        raise InvalidArgument(
            f"{field}.oom_score_adj {r.oom_score_adj} is outside "
            f"{OOM_SCORE_ADJ[0]}..{OOM_SCORE_ADJ[1]}"
        )
    _check_list(r.cpuset_cpus, f"{field}.cpuset_cpus", "CPUs", ONLINE_CPUS)
    _check_list(r.cpuset_mems, f"{field}.cpuset_mems", "memory nodes", ONLINE_MEMS)
    for page_size, limit in r.hugepage_limits.items():
        if not re.fullmatch(r"\d+[KMG]B", page_size):
            raise InvalidArgument(
                f"{field}.hugepage_limits page_size {page_size!r} is not like 2MB or 1GB"
            )
        if limit < 0:
            raise InvalidArgument(f"{field}.hugepage_limits[{page_size}] {limit} is negative")
    for key in r.unified:
        if not key or "/" in key or key.startswith("."):
            raise InvalidArgument(f"{field}.unified key {key!r} is not a cgroup file name")


def parse_list(text: str) -> set[int]:
    """The numbers of a kernel list ("0-3,8"); ValueError when it does not parse."""
    if not _LIST.fullmatch(text):
        raise ValueError(text)
    numbers: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(text)
        numbers.update(range(first, last + 1))
    return numbers


def _check_list(text: str, field: str, what: str, online_file: Path) -> None:
    if not text:
        return
    try:
        asked = parse_list(text.strip())
    except ValueError:
        raise InvalidArgument(
            f"{field} {text!r} does not parse: a list like 0-3,8 is expected"
        ) from None
    try:
        online_text = online_file.read_text().strip()
        online = parse_list(online_text)
    except (OSError, ValueError):
        return
    if missing := sorted(asked - online):
        raise InvalidArgument(
            f"{field} {text!r} names {what} this node does not have ({missing[0]}; "
            f"online: {online_text})"
        )
