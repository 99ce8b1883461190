"""cgroup v1 files: cpu and cpuacct, memory and blkio, each its own hierarchy."""

from __future__ import annotations

import os

from metrics.cgroup_files import Scrape, scaled, working_set
from metrics.model import BlkioDevice, CpuSpec, CpuStats, MemoryStats

# cpuacct.stat counts USER_HZ ticks, however the kernel keeps time inside.
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
# v1 shows "no limit" as PAGE_COUNTER_MAX pages in bytes, just under 2^63 for any page size.
_V1_UNLIMITED_BYTES = 1 << 62


def cpu_v1(scrape: Scrape, acct: str | None, cpu: str | None) -> tuple[CpuStats, CpuSpec]:
    usage = user = system = None
    if acct is not None:
        usage = scrape.number(acct, "cpuacct.usage")
        ticks = scrape.flat_keyed(acct, "cpuacct.stat")
        user, system = (
            scaled(ticks.get("user"), _NS_PER_TICK),
            scaled(ticks.get("system"), _NS_PER_TICK),
        )
    if cpu is None:
        return CpuStats(usage, user, system), CpuSpec()
    stat = scrape.flat_keyed(cpu, "cpu.stat")
    quota = scrape.number(cpu, "cpu.cfs_quota_us")
    stats = CpuStats(
        usage,
        user,
        system,
        stat.get("nr_periods"),
        stat.get("nr_throttled"),
        stat.get("throttled_time"),
    )
    spec = CpuSpec(
        scrape.number(cpu, "cpu.shares"),
        None if quota == -1 else quota,
        scrape.number(cpu, "cpu.cfs_period_us"),
    )
    return stats, spec


def memory_v1(scrape: Scrape, directory: str, *, brief: bool = False) -> MemoryStats:
    """Brief: usage, working set, RSS, swap, faults and the limit alone."""
    usage = scrape.number(directory, "memory.usage_in_bytes")
    stat = scrape.flat_keyed(directory, "memory.stat")
    limit = scrape.number(directory, "memory.limit_in_bytes")
    swap = stat.get("total_swap")
    if swap is None:
        both = scrape.number(directory, "memory.memsw.usage_in_bytes")
        # Two reads, not one snapshot: the difference can dip below zero.
        swap = None if both is None or usage is None else max(both - usage, 0)
    if brief:
        return MemoryStats(
            usage_bytes=usage,
            working_set_bytes=working_set(usage, stat.get("total_inactive_file")),
            rss_bytes=stat.get("total_rss"),
            swap_bytes=swap,
            page_faults=stat.get("total_pgfault"),
            major_page_faults=stat.get("total_pgmajfault"),
            limit_bytes=_limit(limit),
        )
    oom = scrape.flat_keyed(directory, "memory.oom_control")
    return MemoryStats(
        usage_bytes=usage,
        working_set_bytes=working_set(usage, stat.get("total_inactive_file")),
        rss_bytes=stat.get("total_rss"),
        cache_bytes=stat.get("total_cache"),
        swap_bytes=swap,
        page_faults=stat.get("total_pgfault"),
        major_page_faults=stat.get("total_pgmajfault"),
        local_page_faults=stat.get("pgfault"),
        local_major_page_faults=stat.get("pgmajfault"),
        kernel_bytes=scrape.number(directory, "memory.kmem.usage_in_bytes"),
        mapped_file_bytes=stat.get("total_mapped_file"),
        max_usage_bytes=scrape.number(directory, "memory.max_usage_in_bytes"),
        failcnt=scrape.number(directory, "memory.failcnt"),
        oom_kills=oom.get("oom_kill"),
        limit_bytes=_limit(limit),
        reservation_bytes=_limit(scrape.number(directory, "memory.soft_limit_in_bytes")),
        # v1 limits memory and swap together, as cAdvisor reports it.
        swap_limit_bytes=_limit(scrape.number(directory, "memory.memsw.limit_in_bytes")),
    )


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= _V1_UNLIMITED_BYTES else value


def blkio_v1(scrape: Scrape, directory: str) -> list[BlkioDevice]:
    devices: dict[tuple[int, int], list[int]] = {}
    for name, read_at in (
        ("blkio.throttle.io_service_bytes_recursive", 0),
        ("blkio.throttle.io_serviced_recursive", 2),
    ):
        text = scrape.text(directory, name)
        if text is None:
            continue
        torn = not text
        for line in text.splitlines():
            fields = line.split()
            if len(fields) != 3:
                torn = torn or fields[:1] != ["Total"]
                continue
            major, _, minor = fields[0].partition(":")
            op = 0 if fields[1] == "Read" else 1 if fields[1] == "Write" else -1
            if op < 0:
                continue
            try:
                counters = devices.setdefault((int(major), int(minor)), [0, 0, 0, 0])
                counters[read_at + op] = int(fields[2])
            except ValueError:
                torn = True
        if torn:
            scrape.problems.append((name, "malformed" if text.strip() else "empty"))
    return [BlkioDevice(major, minor, *c) for (major, minor), c in sorted(devices.items())]
