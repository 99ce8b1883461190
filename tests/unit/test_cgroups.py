from __future__ import annotations

import errno
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument
from runtime.host.cgroups import CgroupLayout, CgroupMode, pod_cgroup_path

ALL_V2 = "cpuset cpu io memory hugetlb pids"
ALL_V2_ENABLE = "+cpuset +cpu +io +memory +hugetlb +pids"

# --- recorded host files -------------------------------------------------------------------

# A pure cgroup v2 host (Fedora 39 / Ubuntu 22.04 layout).
V2_MOUNTINFO = textwrap.dedent(
    """\
    22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
    24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
    26 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
    27 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
    """  # noqa: E501
)
V2_PROC_CGROUPS = textwrap.dedent(
    """\
    #subsys_name\thierarchy\tnum_cgroups\tenabled
    cpuset\t0\t148\t1
    cpu\t0\t148\t1
    cpuacct\t0\t148\t1
    blkio\t0\t148\t1
    memory\t0\t148\t1
    devices\t0\t148\t1
    freezer\t0\t148\t1
    net_cls\t0\t148\t1
    perf_event\t0\t148\t1
    net_prio\t0\t148\t1
    hugetlb\t0\t148\t1
    pids\t0\t148\t1
    misc\t0\t148\t1
    """
)

# This test host: v1 hierarchies, one per controller, plus an unused cgroup2 mount.
HYBRID_MOUNTINFO = textwrap.dedent(
    """\
    22 27 0:21 / /proc rw,relatime - proc proc rw
    23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
    31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
    32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
    33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
    34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
    36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
    37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
    38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
    39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
    40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
    """
)
HYBRID_PROC_CGROUPS = textwrap.dedent(
    """\
    #subsys_name\thierarchy\tnum_cgroups\tenabled
    cpuset\t3\t1\t1
    cpu\t1\t1\t1
    cpuacct\t2\t1\t1
    blkio\t7\t1\t1
    memory\t4\t27\t1
    devices\t5\t1\t1
    freezer\t6\t1\t1
    net_cls\t0\t1\t1
    perf_event\t0\t1\t1
    net_prio\t0\t1\t1
    hugetlb\t0\t1\t1
    pids\t8\t1\t1
    """
)

# A pure v1 host (CentOS 7): co-mounted controllers, SELinux and systemd super options.
V1_MOUNTINFO = textwrap.dedent(
    """\
    18 61 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw,seclabel
    24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,seclabel,mode=755
    25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,seclabel,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
    28 24 0:24 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,seclabel,net_prio,net_cls
    29 24 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,seclabel,cpuacct,cpu
    30 24 0:26 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,seclabel,cpuset
    31 24 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,seclabel,memory
    32 24 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,seclabel,pids
    33 24 0:29 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,seclabel,hugetlb
    """  # noqa: E501
)
V1_PROC_CGROUPS = textwrap.dedent(
    """\
    #subsys_name\thierarchy\tnum_cgroups\tenabled
    cpuset\t5\t6\t1
    cpu\t4\t76\t1
    cpuacct\t4\t76\t1
    memory\t6\t76\t1
    net_cls\t3\t1\t1
    pids\t7\t76\t1
    hugetlb\t8\t1\t1
    net_prio\t3\t1\t1
    """
)

Recorded = Callable[[str, str], CgroupLayout]


@pytest.fixture
def detect(tmp_path: Path) -> Recorded:
    def from_text(mountinfo: str, proc_cgroups: str) -> CgroupLayout:
        (tmp_path / "mountinfo").write_text(mountinfo)
        (tmp_path / "cgroups").write_text(proc_cgroups)
        return CgroupLayout.detect(tmp_path / "mountinfo", tmp_path / "cgroups")

    return from_text


# --- pod_cgroup_path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        ("/kubepods/burstable/pod12", "/kubepods/burstable/pod12/moorage-abc"),
        ("kubepods/burstable/pod12", "/kubepods/burstable/pod12/moorage-abc"),
        ("/kubepods/", "/kubepods/moorage-abc"),
        ("", "/moorage-abc"),
        ("/", "/moorage-abc"),
    ],
)
def test_cgroupfs_path_is_below_the_parent_with_one_leading_slash(
    parent: str, expected: str
) -> None:
    assert pod_cgroup_path("cgroupfs", parent, "abc") == expected


@pytest.mark.parametrize("parent", ["/kubepods/../etc", "..", "../x", "/a/.."])
@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_parent_with_dotdot_is_refused(driver: str, parent: str) -> None:
    with pytest.raises(InvalidArgument, match=r"must not contain '\.\.'"):
        pod_cgroup_path(driver, parent, "abc")


def test_systemd_slice_expands_to_its_nested_slices() -> None:
    assert pod_cgroup_path("systemd", "kubepods-besteffort-pod12.slice", "abc") == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice"
        "/moorage-abc.scope"
    )


def test_systemd_top_level_slice_is_one_level() -> None:
    assert pod_cgroup_path("systemd", "kubepods.slice", "abc") == (
        "/kubepods.slice/moorage-abc.scope"
    )


@pytest.mark.parametrize("parent", ["", "-.slice"])
def test_systemd_root_slice_puts_the_scope_at_the_root(parent: str) -> None:
    assert pod_cgroup_path("systemd", parent, "abc") == "/moorage-abc.scope"


@pytest.mark.parametrize(
    "parent", ["kubepods", "/kubepods.slice", "kubepods.slice/pod.slice", "kubepods.scope"]
)
def test_systemd_parent_that_is_not_a_slice_name_is_refused(parent: str) -> None:
    with pytest.raises(InvalidArgument, match="not a systemd slice name"):
        pod_cgroup_path("systemd", parent, "abc")


@pytest.mark.parametrize("parent", ["kubepods--pod.slice", "-kubepods.slice", "kubepods-.slice"])
def test_systemd_slice_with_an_empty_part_is_refused(parent: str) -> None:
    with pytest.raises(InvalidArgument, match="not a valid slice name"):
        pod_cgroup_path("systemd", parent, "abc")


# --- CgroupLayout.detect -------------------------------------------------------------------


def test_pure_v2_host_is_detected(detect: Recorded) -> None:
    layout = detect(V2_MOUNTINFO, V2_PROC_CGROUPS)

    assert layout == CgroupLayout(CgroupMode.V2, {}, Path("/sys/fs/cgroup"))
    assert layout.roots == [Path("/sys/fs/cgroup")]
    assert layout.describe() == "v2 at /sys/fs/cgroup"


def test_hybrid_host_is_detected_with_one_root_per_hierarchy(detect: Recorded) -> None:
    layout = detect(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUPS)

    assert layout.mode is CgroupMode.HYBRID
    assert layout.unified_root == Path("/sys/fs/cgroup/unified")
    assert layout.v1_roots == {
        name: Path("/sys/fs/cgroup") / directory
        for name, directory in [
            ("cpu", "cpu"),
            ("cpuacct", "cpuacct"),
            ("cpuset", "cpuset"),
            ("memory", "memory"),
            ("devices", "devices"),
            ("freezer", "freezer"),
            ("blkio", "blkio"),
            ("pids", "pids"),
            ("name=systemd", "systemd"),
        ]
    }
    assert layout.controllers == sorted(
        ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"]
    )
    assert layout.roots[-1] == Path("/sys/fs/cgroup/unified")
    assert len(layout.roots) == 10


def test_hybrid_host_pod_cgroups_are_v1_only(detect: Recorded) -> None:
    layout = detect(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUPS)

    assert Path("/sys/fs/cgroup/unified/moorage/p") not in layout.dirs("/moorage/p")
    assert Path("/sys/fs/cgroup/cpu/moorage/p") in layout.dirs("/moorage/p")


def test_hybrid_description_lists_the_unified_controllers(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("\n")
    layout = CgroupLayout(CgroupMode.HYBRID, {"cpu": tmp_path / "cpu"}, unified)

    assert layout.describe() == f"v1 hybrid (cgroup2 also at {unified}, controllers there: none)"


def test_pure_v1_host_keeps_co_mounted_controllers_together(detect: Recorded) -> None:
    layout = detect(V1_MOUNTINFO, V1_PROC_CGROUPS)

    assert layout.mode is CgroupMode.V1
    assert layout.unified_root is None
    assert layout.v1_roots == {
        "name=systemd": Path("/sys/fs/cgroup/systemd"),
        "net_prio,net_cls": Path("/sys/fs/cgroup/net_cls,net_prio"),
        "cpuacct,cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuset": Path("/sys/fs/cgroup/cpuset"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "pids": Path("/sys/fs/cgroup/pids"),
        "hugetlb": Path("/sys/fs/cgroup/hugetlb"),
    }
    assert layout.controllers == [
        "cpu",
        "cpuacct",
        "cpuset",
        "hugetlb",
        "memory",
        "net_cls",
        "net_prio",
        "pids",
    ]
    assert layout.describe() == "v1"


def test_first_mount_of_a_hierarchy_is_its_root(detect: Recorded) -> None:
    bind_mount = "50 22 0:26 / /var/lib/kubelet/cpuset rw - cgroup cgroup rw,seclabel,cpuset\n"

    layout = detect(V1_MOUNTINFO + bind_mount, V1_PROC_CGROUPS)

    assert layout.v1_roots["cpuset"] == Path("/sys/fs/cgroup/cpuset")


def test_first_cgroup2_mount_is_the_unified_root(detect: Recorded) -> None:
    second = "90 22 0:23 / /run/other rw - cgroup2 cgroup2 rw\n"

    assert detect(V2_MOUNTINFO + second, "").unified_root == Path("/sys/fs/cgroup")


def test_escaped_space_in_a_mount_point_is_decoded(detect: Recorded) -> None:
    line = "26 24 0:23 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n"

    assert detect(line, "").unified_root == Path("/sys/fs/my cgroup")


def test_host_without_cgroup_mounts_is_an_error(detect: Recorded) -> None:
    no_cgroups = "\n".join(V2_MOUNTINFO.splitlines()[:2]) + "\n"

    with pytest.raises(RuntimeError, match="no cgroup filesystem"):
        detect(no_cgroups, V2_PROC_CGROUPS)


# --- operations on a recorded v2 tree -------------------------------------------------------


def _v2_dir(directory: Path, controllers: str = ALL_V2, enabled: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cgroup.controllers").write_text(controllers + "\n")
    (directory / "cgroup.subtree_control").write_text(enabled + ("\n" if enabled else ""))
    (directory / "cgroup.procs").write_text("")
    return directory


@pytest.fixture
def v2_root(tmp_path: Path) -> Path:
    return _v2_dir(tmp_path / "cgroup")


@pytest.fixture
def v2(v2_root: Path) -> CgroupLayout:
    return CgroupLayout(CgroupMode.V2, {}, v2_root)


def test_v2_controllers_are_read_from_the_root(v2: CgroupLayout) -> None:
    assert v2.controllers == ALL_V2.split()


def test_v2_create_makes_the_dirs_and_delegates_controllers_to_them(
    v2: CgroupLayout, v2_root: Path
) -> None:
    _v2_dir(v2_root / "a")  # what the kernel shows once the root delegates

    v2.create("/a/b")

    assert (v2_root / "a" / "b").is_dir()
    assert (v2_root / "cgroup.subtree_control").read_text() == ALL_V2_ENABLE
    assert (v2_root / "a" / "cgroup.subtree_control").read_text() == ALL_V2_ENABLE
    assert list((v2_root / "a" / "b").iterdir()) == []  # the leaf keeps no controllers for children
    assert v2.exists("/a/b")
    assert v2.dirs("/a/b") == [v2_root / "a" / "b"]


def test_v2_create_enables_only_available_and_not_yet_enabled_controllers(
    v2_root: Path,
) -> None:
    _v2_dir(v2_root, controllers="cpu io memory pids rdma misc", enabled="cpu memory")
    layout = CgroupLayout(CgroupMode.V2, {}, v2_root)

    layout.create("/pod")

    assert (v2_root / "cgroup.subtree_control").read_text() == "+io +pids"


def test_v2_create_leaves_subtree_control_alone_when_all_are_enabled(v2_root: Path) -> None:
    _v2_dir(v2_root, enabled=ALL_V2)
    layout = CgroupLayout(CgroupMode.V2, {}, v2_root)

    layout.create("/pod")

    assert (v2_root / "cgroup.subtree_control").read_text() == ALL_V2 + "\n"


def test_v2_create_of_an_existing_cgroup_succeeds(v2: CgroupLayout, v2_root: Path) -> None:
    v2.create("/pod")
    v2.create("/pod")

    assert (v2_root / "pod").is_dir()


def test_v2_add_process_writes_the_pid_to_cgroup_procs(v2: CgroupLayout, v2_root: Path) -> None:
    v2.create("/pod")

    v2.add_process("/pod", 4242)

    assert (v2_root / "pod" / "cgroup.procs").read_text() == "4242"


def test_remove_removes_the_cgroup_and_its_children(v2: CgroupLayout, v2_root: Path) -> None:
    # Real cgroupfs directories rmdir with their control files in them; plain dirs here.
    (v2_root / "pod" / "c1" / "nested").mkdir(parents=True)
    (v2_root / "pod" / "c2").mkdir()

    v2.remove("/pod")

    assert not (v2_root / "pod").exists()
    assert not v2.exists("/pod")
    assert (v2_root / "cgroup.controllers").exists()


def test_removing_a_missing_cgroup_succeeds(v2: CgroupLayout) -> None:
    v2.remove("/never/created")
    v2.remove("/never/created")


def test_remove_retries_while_the_kernel_answers_busy(
    v2: CgroupLayout, v2_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (v2_root / "pod").mkdir()
    real_rmdir = Path.rmdir
    busy_answers = [2]

    def rmdir_busy_twice(self: Path) -> None:
        if self.name == "pod" and busy_answers[0] > 0:
            busy_answers[0] -= 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_rmdir(self)

    monkeypatch.setattr(Path, "rmdir", rmdir_busy_twice)

    v2.remove("/pod")

    assert busy_answers == [0]
    assert not (v2_root / "pod").exists()


def test_remove_gives_up_when_busy_past_the_timeout(
    v2: CgroupLayout, v2_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (v2_root / "pod").mkdir()

    def always_busy(self: Path) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(Path, "rmdir", always_busy)

    with pytest.raises(OSError, match="busy") as raised:
        v2.remove("/pod", timeout_s=0.01)
    assert raised.value.errno == errno.EBUSY


def test_remove_does_not_retry_other_errors(v2: CgroupLayout, v2_root: Path) -> None:
    (v2_root / "pod").mkdir()
    (v2_root / "pod" / "stray-file").write_text("")

    with pytest.raises(OSError) as raised:
        v2.remove("/pod", timeout_s=5.0)
    assert raised.value.errno == errno.ENOTEMPTY


# --- operations on a recorded v1 tree -------------------------------------------------------


@pytest.fixture
def v1_roots(tmp_path: Path) -> dict[str, Path]:
    cpu = tmp_path / "cpu,cpuacct"
    cpuset = tmp_path / "cpuset"
    cpu.mkdir()
    cpuset.mkdir()
    (cpu / "cpu.shares").write_text("1024\n")
    (cpuset / "cpuset.cpus").write_text("0-7\n")
    (cpuset / "cpuset.mems").write_text("0\n")
    return {"cpuacct,cpu": cpu, "cpuset": cpuset}


@pytest.fixture
def v1(v1_roots: dict[str, Path]) -> CgroupLayout:
    return CgroupLayout(CgroupMode.V1, v1_roots)


def test_v1_create_makes_the_cgroup_in_every_hierarchy(
    v1: CgroupLayout, v1_roots: dict[str, Path]
) -> None:
    v1.create("/kubepods/pod1")

    assert v1.dirs("/kubepods/pod1") == [r / "kubepods" / "pod1" for r in v1_roots.values()]
    assert all(d.is_dir() for d in v1.dirs("/kubepods/pod1"))


def test_v1_create_copies_cpus_and_mems_from_the_parent_in_cpuset_hierarchies(
    v1: CgroupLayout, v1_roots: dict[str, Path]
) -> None:
    v1.create("/kubepods/pod1")

    cpuset = v1_roots["cpuset"]
    for directory in (cpuset / "kubepods", cpuset / "kubepods" / "pod1"):
        assert (directory / "cpuset.cpus").read_text() == "0-7\n"
        assert (directory / "cpuset.mems").read_text() == "0\n"
    cpu = v1_roots["cpuacct,cpu"]
    assert sorted(p.name for p in (cpu / "kubepods").iterdir()) == ["pod1"]
    assert list((cpu / "kubepods" / "pod1").iterdir()) == []


def test_v1_create_copies_from_a_co_mounted_cpuset_hierarchy(tmp_path: Path) -> None:
    root = tmp_path / "cpuset,cpu"
    root.mkdir()
    (root / "cpuset.cpus").write_text("2-3\n")
    (root / "cpuset.mems").write_text("1\n")
    layout = CgroupLayout(CgroupMode.V1, {"cpuset,cpu": root})

    layout.create("/pod")

    assert (root / "pod" / "cpuset.cpus").read_text() == "2-3\n"
    assert (root / "pod" / "cpuset.mems").read_text() == "1\n"


def test_v1_create_keeps_the_cpus_of_an_existing_parent(
    v1: CgroupLayout, v1_roots: dict[str, Path]
) -> None:
    parent = v1_roots["cpuset"] / "kubepods"
    parent.mkdir()
    (parent / "cpuset.cpus").write_text("4-5\n")
    (parent / "cpuset.mems").write_text("0\n")

    v1.create("/kubepods/pod1")

    assert (parent / "cpuset.cpus").read_text() == "4-5\n"
    assert (parent / "pod1" / "cpuset.cpus").read_text() == "4-5\n"


def test_v1_add_process_writes_the_pid_in_every_hierarchy(v1: CgroupLayout) -> None:
    v1.create("/pod")

    v1.add_process("/pod", 99)

    assert [(d / "cgroup.procs").read_text() for d in v1.dirs("/pod")] == ["99", "99"]


def test_v1_remove_removes_the_cgroup_from_every_hierarchy(
    v1_roots: dict[str, Path],
) -> None:
    for root in v1_roots.values():
        (root / "pod" / "child").mkdir(parents=True)
    layout = CgroupLayout(CgroupMode.V1, v1_roots)

    layout.remove("/pod")

    assert not layout.exists("/pod")
    assert all(root.is_dir() for root in v1_roots.values())


def test_hybrid_remove_also_sweeps_what_runc_mirrored_in_the_unified_tree(
    v1_roots: dict[str, Path], tmp_path: Path
) -> None:
    unified = tmp_path / "unified"
    (unified / "pod" / "container").mkdir(parents=True)
    for root in v1_roots.values():
        (root / "pod").mkdir()
    layout = CgroupLayout(CgroupMode.HYBRID, v1_roots, unified)

    layout.remove("/pod")

    assert not (unified / "pod").exists()
    assert not layout.exists("/pod")
