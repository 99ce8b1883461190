"""apply_limits on recorded cgroup trees: the files runc's managers would write, and a refused
value leaving every file as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument
from runtime.host.cgroup_limits import apply_limits, shares_to_weight
from runtime.host.cgroups import CgroupLayout, CgroupMode
from runtime.resources import Resources

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
POD = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod6f3a2c1e_8d4b_4c1a_9e7f_2b5d0c9a1e33.slice"
)
# Control files the kernel has in every pod cgroup that the recorded tree (made for the
# metrics reader) did not keep, with their values in a new cgroup.
V2_DEFAULTS = {
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "memory.swap.max": "max",
    "hugetlb.2MB.max": "max",
    "memory.high": "max",
}
V1_FILES = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"},
    "cpuset": {"cpuset.cpus": "0-3", "cpuset.mems": "0"},
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712",
        "memory.memsw.limit_in_bytes": "9223372036854771712",
    },
}


@pytest.fixture
def v2_pod(tmp_path: Path) -> tuple[CgroupLayout, Path]:
    root = tmp_path / "cgroup"
    shutil.copytree(FIXTURES / "cgroup_v2" / "full", root)
    pod = root / POD.strip("/")
    for name, value in V2_DEFAULTS.items():
        (pod / name).write_text(value + "\n")
    return CgroupLayout(CgroupMode.V2, {}, root), pod


@pytest.fixture
def v1_pod(tmp_path: Path) -> tuple[CgroupLayout, Path]:
    roots: dict[str, Path] = {}
    for controller, files in V1_FILES.items():
        roots[controller] = tmp_path / controller
        pod = roots[controller] / POD.strip("/")
        pod.mkdir(parents=True)
        for name, value in files.items():
            (pod / name).write_text(value + "\n")
    return CgroupLayout(CgroupMode.HYBRID, roots, tmp_path / "unified"), tmp_path


def read(directory: Path, name: str) -> str:
    return (directory / name).read_text().strip()


def test_v2_pod_cgroup_gets_the_files_runc_would_write(
    v2_pod: tuple[CgroupLayout, Path],
) -> None:
    layout, pod = v2_pod

    apply_limits(
        layout,
        POD,
        Resources(
            cpu_shares=512,
            cpu_quota=150_000,
            cpu_period=50_000,
            memory_limit_bytes=256 << 20,
            memory_swap_limit_bytes=384 << 20,
            cpuset_cpus="0-1",
            cpuset_mems="0",
            hugepage_limits={"2MB": 4 << 20},
            unified={"memory.high": "200000000"},
        ),
    )

    assert read(pod, "cpu.weight") == str(shares_to_weight(512)) == "20"
    assert read(pod, "cpu.max") == "150000 50000"
    assert read(pod, "memory.max") == str(256 << 20)
    # v2 limits swap alone; the CRI's figure is memory plus swap.
    assert read(pod, "memory.swap.max") == str(128 << 20)
    assert read(pod, "cpuset.cpus") == "0-1"
    assert read(pod, "cpuset.mems") == "0"
    assert read(pod, "hugetlb.2MB.max") == str(4 << 20)
    assert read(pod, "memory.high") == "200000000"


def test_v2_quota_alone_keeps_the_recorded_period_and_unset_fields_stay(
    v2_pod: tuple[CgroupLayout, Path],
) -> None:
    layout, pod = v2_pod

    apply_limits(layout, POD, Resources(cpu_quota=20_000))

    assert read(pod, "cpu.max") == "20000 100000"
    assert read(pod, "cpu.weight") == "79"
    assert read(pod, "memory.max") == "536870912"


def test_v2_unlimited_quota_and_swap_are_max(v2_pod: tuple[CgroupLayout, Path]) -> None:
    layout, pod = v2_pod

    apply_limits(layout, POD, Resources(cpu_quota=-1, memory_swap_limit_bytes=-1))

    assert read(pod, "cpu.max") == "max 100000"
    assert read(pod, "memory.swap.max") == "max"


def test_v2_refused_value_puts_back_the_files_already_written(
    v2_pod: tuple[CgroupLayout, Path],
) -> None:
    layout, pod = v2_pod
    # A control file the kernel does not offer here: the write after cpu and memory fails.
    (pod / "hugetlb.1GB.max").mkdir()

    with pytest.raises(InvalidArgument, match=r"hugetlb\.1GB\.max.*limits unchanged"):
        apply_limits(
            layout,
            POD,
            Resources(cpu_shares=512, memory_limit_bytes=1 << 30, hugepage_limits={"1GB": 1 << 30}),
        )

    assert read(pod, "cpu.weight") == "79"
    assert read(pod, "memory.max") == "536870912"


def test_v2_swap_without_a_memory_limit_is_refused(v2_pod: tuple[CgroupLayout, Path]) -> None:
    layout, pod = v2_pod

    with pytest.raises(InvalidArgument, match="memory_swap_limit_in_bytes needs"):
        apply_limits(layout, POD, Resources(memory_swap_limit_bytes=1 << 30))

    assert read(pod, "memory.swap.max") == "max"


def test_v1_pod_cgroup_gets_each_value_in_its_hierarchy(
    v1_pod: tuple[CgroupLayout, Path],
) -> None:
    layout, roots = v1_pod

    apply_limits(
        layout,
        POD,
        Resources(
            cpu_shares=256,
            cpu_quota=30_000,
            cpu_period=60_000,
            memory_limit_bytes=64 << 20,
            memory_swap_limit_bytes=96 << 20,
            cpuset_cpus="1",
        ),
    )

    cpu, cpuset, memory = (roots / c / POD.strip("/") for c in ("cpu", "cpuset", "memory"))
    assert read(cpu, "cpu.shares") == "256"
    assert read(cpu, "cpu.cfs_quota_us") == "30000"
    assert read(cpu, "cpu.cfs_period_us") == "60000"
    assert read(cpuset, "cpuset.cpus") == "1"
    assert read(cpuset, "cpuset.mems") == "0"
    assert read(memory, "memory.limit_in_bytes") == str(64 << 20)
    assert read(memory, "memory.memsw.limit_in_bytes") == str(96 << 20)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (Resources(cpu_shares=256, unified={"memory.high": "1"}), "need cgroup v2"),
        (Resources(cpu_shares=256, hugepage_limits={"2MB": 1 << 21}), "no hugetlb cgroup"),
    ],
)
def test_v1_what_the_node_cannot_take_is_refused_before_any_write(
    v1_pod: tuple[CgroupLayout, Path], resources: Resources, message: str
) -> None:
    layout, roots = v1_pod

    with pytest.raises(InvalidArgument, match=message):
        apply_limits(layout, POD, resources)

    assert read(roots / "cpu" / POD.strip("/"), "cpu.shares") == "1024"
