"""CgroupReader on recorded cgroup trees: exact figures as the kernel formats them."""

from __future__ import annotations

import os
from pathlib import Path

from structlog.testing import capture_logs

from metrics.cadvisor_series import CONTAINER_SERIES
from metrics.cgroup_reader import CgroupReader
from metrics.container_metrics import ContainerSample, container_view
from metrics.model import (
    BlkioDevice,
    CpuSpec,
    CpuStats,
    FilesystemStats,
    HugetlbStats,
    MemoryStats,
    PidsStats,
)
from runtime.host.cgroups import CgroupLayout

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
V2 = FIXTURES / "cgroup_v2"
V1 = FIXTURES / "cgroup_v1"
POD = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod6f3a2c1e_8d4b_4c1a_9e7f_2b5d0c9a1e33.slice"
)
CONTAINER = POD + "/cri-containerd-4b1d9e0f7a2c.scope"
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def v2_reader(tree: str) -> CgroupReader:
    return CgroupReader({}, V2 / tree, v2=True, hugetlb_sizes=["2MB", "1GB"])


def v1_reader() -> CgroupReader:
    roots = {h: V1 / h for h in ("cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb")}
    roots["name=systemd"] = V1 / "systemd"
    return CgroupReader(roots, None, hugetlb_sizes=["2MB"])


def test_v2_container_figures_are_read_exactly() -> None:
    stats = v2_reader("full").read(CONTAINER)

    assert stats is not None
    assert stats.cpu == CpuStats(
        8_101_452_000, 6_040_021_000, 2_061_431_000, 4820, 37, 1_850_322_000
    )
    # weight 39 is what runc makes of 1024 shares; the way back loses a little, as in runc.
    assert stats.cpu_spec == CpuSpec(shares=998, quota=50000, period=100000)
    assert stats.memory == MemoryStats(
        usage_bytes=15_376_384,
        working_set_bytes=15_376_384 - 6_029_312,
        rss_bytes=4_485_120,
        cache_bytes=10_407_936,
        swap_bytes=524_288,
        page_faults=27_361,
        major_page_faults=12,
        local_page_faults=27_361,
        local_major_page_faults=12,
        kernel_bytes=1_433_600,
        mapped_file_bytes=6_619_136,
        max_usage_bytes=20_971_520,
        failcnt=17,
        oom_events=2,
        oom_kills=1,
        limit_bytes=268_435_456,
        reservation_bytes=0,
        swap_limit_bytes=None,  # "max"
    )
    assert stats.pids == PidsStats(current=7, limit=1024)
    assert stats.blkio == [BlkioDevice(259, 0, 1_048_576, 4_096_000, 64, 250)]
    assert stats.hugetlb == [
        HugetlbStats("2MB", 2_097_152, None, 3),
        HugetlbStats("1GB", 0, None, 0),
    ]


def test_v2_pod_without_cpu_limit_and_with_two_devices() -> None:
    stats = v2_reader("full").read(POD)

    assert stats is not None
    assert stats.cpu_spec == CpuSpec(shares=2046, quota=None, period=100000)
    assert stats.pids == PidsStats(current=9, limit=None)
    assert stats.memory.limit_bytes == 536_870_912
    assert stats.memory.working_set_bytes == 31_088_640 - 12_111_872
    assert [(d.major, d.minor) for d in stats.blkio] == [(8, 0), (259, 0)]


def test_v2_host_without_io_hugetlb_and_swap_accounting_serves_the_rest() -> None:
    reader = v2_reader("partial")
    with capture_logs() as logs:
        stats = reader.read("/system.slice/moorage-pod-a1.slice/ctr-77")

    assert stats is not None
    assert stats.cpu == CpuStats(523_000_000, 400_000_000, 123_000_000, 0, 0, 0)
    assert stats.cpu_spec == CpuSpec(shares=2597, quota=None, period=100000)
    assert stats.memory.usage_bytes == 2_015_232
    assert stats.memory.working_set_bytes == 2_015_232 - 258_048
    assert stats.memory.swap_bytes is None
    assert stats.memory.limit_bytes is None
    assert stats.blkio == []
    assert stats.hugetlb == []
    assert stats.memory.max_usage_bytes == 2_412_544
    assert stats.memory.reservation_bytes == 1_048_576
    assert stats.memory.swap_limit_bytes is None
    # Controllers the host lacks are not looked for; the missing swap files are reported.
    assert sorted((e["file"], e["reason"]) for e in logs) == [
        ("memory.swap.current", "missing"),
        ("memory.swap.max", "missing"),
    ]


def test_half_written_files_cost_only_their_figures_and_are_logged_once() -> None:
    reader = v2_reader("torn")
    with capture_logs() as logs:
        stats = reader.read("/ctr")
        again = reader.read("/ctr")

    assert stats is not None
    assert stats == again
    assert stats.cpu_spec == CpuSpec(shares=998, quota=None, period=None)
    assert stats.memory.page_faults is None
    assert stats.memory.major_page_faults is None
    assert stats.memory.rss_bytes == 4_485_120
    assert stats.memory.working_set_bytes == 15_376_384 - 6_029_312
    assert stats.memory.limit_bytes is None
    assert stats.blkio == []
    assert stats.pids == PidsStats(current=7, limit=1024)
    problems = sorted((e["file"], e["reason"]) for e in logs)
    assert problems == [
        ("cpu.max", "empty"),
        ("hugetlb.1GB.current", "missing"),
        ("hugetlb.1GB.events", "missing"),
        ("io.stat", "malformed"),
        ("memory.max", "malformed"),
        ("memory.stat", "malformed"),
    ]
    assert all(e["log_level"] == "warning" and e["cgroup"] == "/ctr" for e in logs)


def test_a_vanished_cgroup_reads_as_none_without_logging() -> None:
    with capture_logs() as logs:
        assert v2_reader("full").read(POD + "/gone.scope") is None
        assert v1_reader().read("/moorage/pod-1/gone") is None
    assert logs == []


def test_v1_container_figures_are_read_exactly() -> None:
    stats = v1_reader().read("/moorage/pod-1/ctr-1")

    assert stats is not None
    assert stats.cpu == CpuStats(4_061_273_114, 312 * TICK_NS, 87 * TICK_NS, 2210, 14, 702_330_114)
    assert stats.cpu_spec == CpuSpec(shares=512, quota=None, period=100000)
    assert stats.memory == MemoryStats(
        usage_bytes=14_090_240,
        working_set_bytes=14_090_240 - 12_288,
        rss_bytes=4_411_392,
        cache_bytes=9_277_440,
        swap_bytes=65_536,
        page_faults=202_486,
        major_page_faults=3,
        local_page_faults=202_486,
        local_major_page_faults=0,  # its own; the 3 above are its subtree's
        kernel_bytes=1_212_416,
        mapped_file_bytes=7_475_200,
        max_usage_bytes=18_874_368,
        failcnt=0,
        oom_events=None,  # v1 counts kills only
        oom_kills=2,
        limit_bytes=134_217_728,
        reservation_bytes=None,  # PAGE_COUNTER_MAX
        swap_limit_bytes=268_435_456,
    )
    assert stats.pids == PidsStats(current=3, limit=None)
    assert stats.blkio == [
        BlkioDevice(8, 0, 8192, 0, 2, 0),
        BlkioDevice(8, 16, 1_056_768, 4_194_304, 42, 96),
    ]
    assert stats.hugetlb == [HugetlbStats("2MB", 2_097_152, 4_194_304, 1)]


def test_v1_unlimited_memory_and_no_swap_accounting() -> None:
    """Also: usage below inactive_file clamps the working set at 0 instead of going negative."""
    with capture_logs() as logs:
        stats = v1_reader().read("/moorage/pod-1/ctr-2")

    assert stats is not None
    assert stats.memory.usage_bytes == 4096
    assert stats.memory.working_set_bytes == 0
    assert stats.memory.limit_bytes is None
    assert stats.memory.swap_bytes is None
    # The cgroup exists in the memory hierarchy only: the others' figures are None, not 0.
    assert stats.cpu == CpuStats()
    assert stats.pids == PidsStats()
    assert ("memory.memsw.usage_in_bytes", "missing") in {(e["file"], e["reason"]) for e in logs}


def test_detect_reads_hybrid_and_pure_v2_mountinfo(tmp_path: Path) -> None:
    proc_cgroups = tmp_path / "cgroups"
    proc_cgroups.write_text(
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
        + "".join(f"{c}\t1\t1\t1\n" for c in ("cpu", "cpuacct", "memory", "pids", "hugetlb"))
    )
    hybrid = tmp_path / "hybrid"
    hybrid.write_text(
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        f"41 31 0:38 / {tmp_path}/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.subtree_control").write_text("hugetlb\n")
    pure = tmp_path / "pure"
    pure.write_text(f"30 23 0:26 / {V2 / 'full'} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")

    hybrid_layout = CgroupLayout.detect(hybrid, proc_cgroups)
    pure_layout = CgroupLayout.detect(pure, proc_cgroups)
    hybrid_reader = CgroupReader.of(hybrid_layout.v1_roots, hybrid_layout.unified_root)
    pure_reader = CgroupReader.of(pure_layout.v1_roots, pure_layout.unified_root)

    assert hybrid_reader._v1 == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
    }
    # Hybrid: only a controller enabled in the unified tree and absent from v1 is read there.
    assert hybrid_reader._v2 == {"hugetlb": str(unified)}
    stats = pure_reader.read(CONTAINER)
    assert stats is not None
    assert stats.memory.usage_bytes == 15_376_384


def test_a_v2_container_has_a_value_for_every_cadvisor_series() -> None:
    stats = v2_reader("full").read(CONTAINER)
    assert stats is not None
    sample = ContainerSample(
        container="web",
        pod="web-0",
        namespace="default",
        id=CONTAINER,
        image="nginx",
        name="4b1d9e0f7a2c",
        stats=stats,
        start_time_s=1.0,
        filesystem=FilesystemStats(259, 1, 1 << 30, 1000, 600),
    )

    view = container_view(sample, 2.0, lambda major, minor: f"{major}:{minor}", lambda *d: d)
    values = {series.name: dict(series.values(view)) for series in CONTAINER_SERIES}

    assert all(values.values())
    assert values["container_memory_max_usage_bytes"] == {(): 20_971_520}
    assert values["container_memory_kernel_usage"] == {(): 1_433_600}
    assert values["container_memory_mapped_file"] == {(): 6_619_136}
    assert values["container_spec_memory_swap_limit_bytes"] == {(): 0}
    assert values["container_fs_writes_total"] == {("259:0",): 250, ("259:1",): 0}
    assert values["container_blkio_device_usage_total"][("259:0", "259", "0", "Read")] == 1_048_576


def test_a_brief_read_keeps_what_the_cri_stats_report_from_both_hierarchies() -> None:
    for reader, path in ((v2_reader("full"), CONTAINER), (v1_reader(), "/moorage/pod-1/ctr-1")):
        full, brief = reader.read(path), reader.read(path, brief=True)

        assert full is not None and brief is not None
        assert brief.cpu.usage_ns == full.cpu.usage_ns
        memory = full.memory
        assert brief.memory == MemoryStats(
            usage_bytes=memory.usage_bytes,
            working_set_bytes=memory.working_set_bytes,
            rss_bytes=memory.rss_bytes,
            swap_bytes=memory.swap_bytes,
            page_faults=memory.page_faults,
            major_page_faults=memory.major_page_faults,
            limit_bytes=memory.limit_bytes,
        )
        assert brief.pids == PidsStats(full.pids.current, None)
        assert (brief.blkio, brief.hugetlb, brief.cpu_spec) == ([], [], CpuSpec())
        assert None not in (brief.memory.usage_bytes, brief.memory.limit_bytes)


def test_a_brief_read_of_a_vanished_cgroup_is_none() -> None:
    assert v2_reader("full").read(POD + "/gone.scope", brief=True) is None
    assert v1_reader().read("/moorage/pod-1/gone", brief=True) is None
