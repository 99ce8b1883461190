"""cgroup v2 files: one unified tree, flat-keyed stat files."""

from __future__ import annotations

from metrics.cgroup_files import Scrape, scaled, working_set
from metrics.model import BlkioDevice, CpuSpec, CpuStats, MemoryStats


def cpu_v2(scrape: Scrape, directory: str, *, limits: bool) -> tuple[CpuStats, CpuSpec]:
    stat = scrape.flat_keyed(directory, "cpu.stat")
    stats = CpuStats(
        scaled(stat.get("usage_usec"), 1000),
        scaled(stat.get("user_usec"), 1000),
        scaled(stat.get("system_usec"), 1000),
        stat.get("nr_periods"),
        stat.get("nr_throttled"),
        scaled(stat.get("throttled_usec"), 1000),
    )
    if not limits:
        return stats, CpuSpec()
    weight = scrape.number(directory, "cpu.weight")
    # The inverse of runc's shares -> weight mapping, so v1 and v2 hosts report alike.
    shares = None if weight is None else 2 + ((weight - 1) * 262142) // 9999
    quota = period = None
    text = scrape.text(directory, "cpu.max")
    if text is not None:
        fields = text.split()
        if len(fields) == 2 and fields[1].isdigit() and (fields[0].isdigit() or fields[0] == "max"):
            quota = None if fields[0] == "max" else int(fields[0])
            period = int(fields[1])
        else:
            scrape.problems.append(("cpu.max", "malformed" if fields else "empty"))
    return stats, CpuSpec(shares, quota, period)


def memory_v2(scrape: Scrape, directory: str, *, brief: bool = False) -> MemoryStats:
    """Brief: usage, working set, RSS, swap, faults and the limit alone."""
    usage = scrape.number(directory, "memory.current")
    stat = scrape.flat_keyed(directory, "memory.stat")
    if brief:
        return MemoryStats(
            usage_bytes=usage,
            working_set_bytes=working_set(usage, stat.get("inactive_file")),
            rss_bytes=stat.get("anon"),
            swap_bytes=scrape.number(directory, "memory.swap.current"),
            page_faults=stat.get("pgfault"),
            major_page_faults=stat.get("pgmajfault"),
            limit_bytes=scrape.number(directory, "memory.max"),
        )
    events = scrape.flat_keyed(directory, "memory.events")
    return MemoryStats(
        usage_bytes=usage,
        working_set_bytes=working_set(usage, stat.get("inactive_file")),
        rss_bytes=stat.get("anon"),
        cache_bytes=stat.get("file"),
        swap_bytes=scrape.number(directory, "memory.swap.current"),
        page_faults=stat.get("pgfault"),
        major_page_faults=stat.get("pgmajfault"),
        # v2 counts faults for the whole subtree only; a container's cgroup has no children.
        local_page_faults=stat.get("pgfault"),
        local_major_page_faults=stat.get("pgmajfault"),
        kernel_bytes=stat.get("kernel"),
        mapped_file_bytes=stat.get("file_mapped"),
        # memory.peak came with 5.19; older kernels keep no high-water mark.
        max_usage_bytes=scrape.number(directory, "memory.peak"),
        # Hitting memory.max is what v1's failcnt counts.
        failcnt=events.get("max"),
        oom_events=events.get("oom"),
        oom_kills=events.get("oom_kill"),
        limit_bytes=scrape.number(directory, "memory.max"),
        reservation_bytes=scrape.number(directory, "memory.low"),
        swap_limit_bytes=scrape.number(directory, "memory.swap.max"),
    )


def io_v2(scrape: Scrape, directory: str) -> list[BlkioDevice]:
    text = scrape.text(directory, "io.stat")
    devices: list[BlkioDevice] = []
    # An empty io.stat is a cgroup that has done no I/O yet.
    for line in (text or "").splitlines():
        try:
            device, *pairs = line.split()
            major, minor = (int(n) for n in device.split(":"))
            keyed = dict(pair.split("=", 1) for pair in pairs)
            devices.append(
                BlkioDevice(
                    major,
                    minor,
                    int(keyed.get("rbytes", 0)),
                    int(keyed.get("wbytes", 0)),
                    int(keyed.get("rios", 0)),
                    int(keyed.get("wios", 0)),
                )
            )
        except ValueError:
            scrape.problems.append(("io.stat", "malformed"))
    return sorted(devices, key=lambda d: (d.major, d.minor))
