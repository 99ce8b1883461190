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
    # This cgroup's own faults; page_faults above count its whole subtree.
    local_page_faults: int | None = None
    local_major_page_faults: int | None = None
    kernel_bytes: int | None = None
    mapped_file_bytes: int | None = None
    max_usage_bytes: int | None = None
    failcnt: int | None = None
    oom_events: int | None = None
    oom_kills: int | None = None
    # None when unlimited, for all three.
    limit_bytes: int | None = None
    reservation_bytes: int | None = None
    swap_limit_bytes: int | None = None


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
class ProcessStats:
    """What /proc says about a cgroup's processes and threads."""

    processes: int = 0
    threads: int = 0
    file_descriptors: int = 0
    sockets: int = 0
    # Threads by the state letter of /proc/TID/stat ("R", "S", "D", "T", ...).
    task_states: dict[str, int] = field(default_factory=dict)
    # The soft RLIMIT_NOFILE of the container's root process, -1 when unlimited (as cAdvisor
    # reports it); None when there is no process to ask.
    max_open_files: int | None = None


@dataclass(frozen=True)
class FilesystemStats:
    """The filesystem holding the containers' writable layers."""

    major: int
    minor: int
    capacity_bytes: int
    inodes_total: int
    inodes_free: int


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
