"""One cgroup's figures, read straight from cgroupfs on v1, hybrid and v2 hosts.

A scrape reads every container on every call, so this stays lean: a handful of small files per
controller, each read once with os.read, no regex and no subprocess. A file that is missing or
unparsable costs only its own figures (None) and is logged once per file name and reason.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import structlog

from metrics.cgroup_files import Scrape
from metrics.cgroup_v1 import blkio_v1, cpu_v1, memory_v1
from metrics.cgroup_v2 import cpu_v2, io_v2, memory_v2
from metrics.model import (
    BlkioDevice,
    CgroupStats,
    CpuSpec,
    CpuStats,
    HugetlbStats,
    MemoryStats,
    PidsStats,
    ProcessStats,
)
from metrics.process_reader import read_processes

log = structlog.get_logger("moorage.metrics")

_V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb")
_V2_CONTROLLERS = ("cpu", "memory", "pids", "io", "hugetlb")


class CgroupReader:
    def __init__(
        self,
        v1_roots: Mapping[str, Path],
        unified_root: Path | None = None,
        v2: bool = False,
        *,
        unified_controllers: Collection[str] | None = None,
        hugetlb_sizes: Sequence[str] | None = None,
    ) -> None:
        if v2 and unified_root is None:
            raise ValueError("a pure v2 host needs its unified root")
        self._v1: dict[str, str] = {}
        for hierarchy, root in v1_roots.items():
            for controller in hierarchy.split(","):
                if controller in _V1_CONTROLLERS:
                    self._v1.setdefault(controller, str(root))
        if unified_controllers is None:
            unified_controllers = _enabled_in_unified(unified_root, v2=v2)
        self._v2: dict[str, str] = {}
        if unified_root is not None:
            v1_alias = {"cpu": ("cpu", "cpuacct"), "io": ("blkio",)}
            for controller in _V2_CONTROLLERS:
                shadowed = any(c in self._v1 for c in v1_alias.get(controller, (controller,)))
                if controller in unified_controllers and not shadowed:
                    self._v2[controller] = str(unified_root)
        # Without the cpu controller a v2 cgroup still has cpu.stat with the usage figures.
        self._v2_cpu_limits = "cpu" in self._v2
        if v2 and unified_root is not None:
            self._v2.setdefault("cpu", str(unified_root))
        self._hugetlb_sizes = list(
            _host_hugetlb_sizes() if hugetlb_sizes is None else hugetlb_sizes
        )
        # A cgroup exists while its directory exists here; other hierarchies may lag in rmdir.
        sources = {**self._v1, **self._v2}
        self._reference_root = next(
            (sources[c] for c in ("memory", "cpu", "cpuacct", "pids") if c in sources),
            next(iter(sources.values()), None),
        )
        # v1 lists a cgroup's threads in `tasks`, v2 in cgroup.threads.
        self._threads_file = (
            "tasks" if self._reference_root in self._v1.values() else ("cgroup.threads")
        )
        self._logged: set[tuple[str, str]] = set()

    @classmethod
    def of(cls, v1_roots: Mapping[str, Path], unified_root: Path | None) -> CgroupReader:
        """The reader for the hierarchies the agent found mounted (runtime/host/cgroups.py's
        CgroupLayout): v1 roots by hierarchy name, and the unified one, if any."""
        if not v1_roots and unified_root is None:
            raise RuntimeError("no cgroup filesystem is mounted")
        return cls(v1_roots, unified_root, v2=not v1_roots)

    def read(self, cgroup_path: str, *, brief: bool = False) -> CgroupStats | None:
        """The cgroup's figures, or None when it no longer exists. Brief: only what the CRI
        stats calls report (CPU usage, memory and swap use, limit, faults, process count),
        from a handful of files instead of some thirty; the other figures stay None."""
        relative = cgroup_path.strip("/")
        scrape = Scrape()
        v1 = {c: f"{root}/{relative}" for c, root in self._v1.items()}
        v2 = {c: f"{root}/{relative}" for c, root in self._v2.items()}
        cpu, spec = CpuStats(), CpuSpec()
        if "cpu" in v2:
            cpu, spec = cpu_v2(scrape, v2["cpu"], limits=self._v2_cpu_limits and not brief)
        elif "cpu" in v1 or "cpuacct" in v1:
            cpu, spec = cpu_v1(scrape, v1.get("cpuacct"), None if brief else v1.get("cpu"))
        memory = MemoryStats()
        if "memory" in v2:
            memory = memory_v2(scrape, v2["memory"], brief=brief)
        elif "memory" in v1:
            memory = memory_v1(scrape, v1["memory"], brief=brief)
        pids = PidsStats()
        if "pids" in v2 or "pids" in v1:
            directory = v2.get("pids") or v1["pids"]
            pids = PidsStats(
                scrape.number(directory, "pids.current"),
                None if brief else scrape.number(directory, "pids.max"),
            )
        blkio: list[BlkioDevice] = []
        hugetlb: list[HugetlbStats] = []
        if not brief:
            if "io" in v2:
                blkio = io_v2(scrape, v2["io"])
            elif "blkio" in v1:
                blkio = blkio_v1(scrape, v1["blkio"])
            if "hugetlb" in v2:
                hugetlb = _hugetlb(scrape, v2["hugetlb"], self._hugetlb_sizes, v2=True)
            elif "hugetlb" in v1:
                hugetlb = _hugetlb(scrape, v1["hugetlb"], self._hugetlb_sizes, v2=False)
        # Only a missing file makes us look: a vanished cgroup is not worth a log line.
        reference = self._reference_root
        if scrape.missing and reference and not os.path.isdir(f"{reference}/{relative}"):
            return None
        for problem in scrape.problems:
            if problem not in self._logged:
                self._logged.add(problem)
                name, reason = problem
                log.warning("cgroup file unusable", file=name, reason=reason, cgroup=cgroup_path)
        return CgroupStats(cpu, memory, pids, blkio, hugetlb, spec)

    def read_processes(self, cgroup_path: str, root_pid: int = 0) -> ProcessStats | None:
        """The cgroup's processes as /proc sees them, or None when it no longer exists. Apart
        from read() because it walks /proc: the Prometheus scrape wants it, the CRI stats
        calls do not."""
        if self._reference_root is None:
            return None
        directory = f"{self._reference_root}/{cgroup_path.strip('/')}"
        return read_processes(directory, self._threads_file, root_pid)


def _hugetlb(scrape: Scrape, directory: str, sizes: list[str], *, v2: bool) -> list[HugetlbStats]:
    found: list[HugetlbStats] = []
    for size in sizes:
        prefix = f"hugetlb.{size}."
        if v2:
            usage = scrape.number(directory, prefix + "current")
            peak, failcnt = None, scrape.flat_keyed(directory, prefix + "events").get("max")
        else:
            usage = scrape.number(directory, prefix + "usage_in_bytes")
            peak = scrape.number(directory, prefix + "max_usage_in_bytes")
            failcnt = scrape.number(directory, prefix + "failcnt")
        # usage_bytes cannot be None in the model; leave the size out rather than invent 0.
        if usage is not None:
            found.append(HugetlbStats(size, usage, peak, failcnt))
    return found


def _enabled_in_unified(unified_root: Path | None, *, v2: bool) -> set[str]:
    # Pure v2: what the root offers. Hybrid: only what someone enabled below the root, since
    # a controller listed but not enabled has no files in the child cgroups.
    if unified_root is None:
        return set()
    name = "cgroup.controllers" if v2 else "cgroup.subtree_control"
    try:
        return set((unified_root / name).read_text().split())
    except OSError:
        return set(_V2_CONTROLLERS) if v2 else set()


def _host_hugetlb_sizes(sysfs: Path = Path("/sys/kernel/mm/hugepages")) -> list[str]:
    """Page sizes named as hugetlb_cgroup names its files ("2MB", "1GB")."""
    try:
        entries = os.listdir(sysfs)
    except OSError:
        return []
    sizes: list[tuple[int, str]] = []
    for entry in entries:
        kib = int(entry.removeprefix("hugepages-").removesuffix("kB"))
        if kib >= 1 << 20:
            sizes.append((kib, f"{kib >> 20}GB"))
        elif kib >= 1 << 10:
            sizes.append((kib, f"{kib >> 10}MB"))
        else:
            sizes.append((kib, f"{kib}KB"))
    return [name for _, name in sorted(sizes)]
