"""Figures read from cgroups and network namespaces: plain dataclasses. A figure the host does
not provide (a missing controller or file) is None, never a made-up 0."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CpuStats:
    usage_ns: int | None = None
    user_ns: int | None = None
    system_ns: int | None = None
    periods: int | None = None
    throttled_periods: int | None = None
    throttled_ns: int | None = None


@dataclass(frozen=True)
class MemoryStats:
    usage_bytes: int | None = None
    # usage minus inactive file pages, as cAdvisor and kubelet's eviction compute it.
    working_set_bytes: int | None = None
    rss_bytes: int | None = None
    cache_bytes: int | None = None
    swap_bytes: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    failcnt: int | None = None
    oom_events: int | None = None
    oom_kills: int | None = None
    # None when unlimited.
    limit_bytes: int | None = None


@dataclass(frozen=True)
class PidsStats:
    current: int | None = None
    # None when unlimited.
    limit: int | None = None


@dataclass(frozen=True)
class BlkioDevice:
    major: int
    minor: int
    read_bytes: int = 0
    write_bytes: int = 0
    read_ops: int = 0
    write_ops: int = 0


@dataclass(frozen=True)
class HugetlbStats:
    page_size: str  # as the kernel names it: "2MB", "1GB"
    usage_bytes: int = 0
    max_usage_bytes: int | None = None
    failcnt: int | None = None


@dataclass(frozen=True)
class CpuSpec:
    """The limits in force, for the container_spec_* metrics."""

    shares: int | None = None
    quota: int | None = None  # None when unlimited
    period: int | None = None


@dataclass(frozen=True)
class CgroupStats:
    cpu: CpuStats = field(default_factory=CpuStats)
    memory: MemoryStats = field(default_factory=MemoryStats)
    pids: PidsStats = field(default_factory=PidsStats)
    blkio: list[BlkioDevice] = field(default_factory=list)
    hugetlb: list[HugetlbStats] = field(default_factory=list)
    cpu_spec: CpuSpec = field(default_factory=CpuSpec)


@dataclass(frozen=True)
class InterfaceStats:
    name: str
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0
