"""Creating and removing pod cgroups on cgroup v1, hybrid and v2 hosts (cgroupfs writes).

On a hybrid host the v1 hierarchies carry the controllers and the unified one carries none
that matter to us, so pods get v1 cgroups only.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import InvalidArgument

_V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")


class CgroupMode(enum.Enum):
    V1 = "v1"
    HYBRID = "hybrid"
    V2 = "v2"


@dataclass(frozen=True)
class CgroupLayout:
    mode: CgroupMode
    # v1 hierarchy mount points, one per hierarchy ("cpu", "memory", "name=systemd", ...).
    v1_roots: dict[str, Path] = field(default_factory=dict)
    unified_root: Path | None = None

    @classmethod
    def detect(
        cls,
        mountinfo: Path = Path("/proc/self/mountinfo"),
        proc_cgroups: Path = Path("/proc/cgroups"),
    ) -> CgroupLayout:
        known = _kernel_controllers(proc_cgroups)
        v1: dict[str, Path] = {}
        unified: Path | None = None
        for line in mountinfo.read_text().splitlines():
            pre, _, post = line.partition(" - ")
            mount_point = Path(pre.split()[4].replace("\\040", " "))
            fstype, _source, super_opts = post.split()[:3]
            if fstype == "cgroup2" and unified is None:
                unified = mount_point
            elif fstype == "cgroup":
                # Super options also carry flags such as noprefix or release_agent=...
                names = [o for o in super_opts.split(",") if o in known or o.startswith("name=")]
                v1.setdefault(",".join(names), mount_point)
        if v1:
            mode = CgroupMode.HYBRID if unified else CgroupMode.V1
            return cls(mode, v1, unified)
        if unified is None:
            raise RuntimeError("no cgroup filesystem is mounted")
        return cls(CgroupMode.V2, {}, unified)

    @property
    def controllers(self) -> list[str]:
        if self.mode is CgroupMode.V2:
            assert self.unified_root is not None
            return (self.unified_root / "cgroup.controllers").read_text().split()
        return sorted(c for h in self.v1_roots for c in h.split(",") if not c.startswith("name="))

    @property
    def roots(self) -> list[Path]:
        """Every mounted hierarchy, the unified one of a hybrid host included."""
        extra = [self.unified_root] if self.unified_root is not None else []
        return [*self.v1_roots.values(), *extra]

    def describe(self) -> str:
        if self.mode is CgroupMode.HYBRID:
            assert self.unified_root is not None
            try:
                unified = (self.unified_root / "cgroup.controllers").read_text().split()
            except OSError:
                unified = []
            listed = " ".join(unified) or "none"
            return f"v1 hybrid (cgroup2 also at {self.unified_root}, controllers there: {listed})"
        if self.mode is CgroupMode.V1:
            return "v1"
        return f"v2 at {self.unified_root}"

    def dirs(self, cgroup_path: str) -> list[Path]:
        relative = cgroup_path.strip("/")
        if self.mode is CgroupMode.V2:
            assert self.unified_root is not None
            return [self.unified_root / relative]
        return [root / relative for root in self.v1_roots.values()]

    def v1_dir(self, controller: str, cgroup_path: str) -> Path | None:
        """The cgroup's directory in the v1 hierarchy carrying `controller`, if one is mounted."""
        for hierarchy, root in self.v1_roots.items():
            if controller in hierarchy.split(","):
                return root / cgroup_path.strip("/")
        return None

    def create(self, cgroup_path: str) -> None:
        if self.mode is CgroupMode.V2:
            assert self.unified_root is not None
            _create_v2(self.unified_root, cgroup_path)
            return
        for hierarchy, root in self.v1_roots.items():
            _create_v1(root, cgroup_path, cpuset="cpuset" in hierarchy.split(","))

    def add_process(self, cgroup_path: str, pid: int) -> None:
        for directory in self.dirs(cgroup_path):
            (directory / "cgroup.procs").write_text(str(pid))

    def kill_all(self, cgroup_path: str) -> None:
        """SIGKILL every process left in the cgroup or below it."""
        for directory in self.dirs(cgroup_path):
            for dirpath, _, _ in os.walk(directory):
                for pid in _read_if_present(Path(dirpath) / "cgroup.procs").split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    def oom_kills(self, cgroup_path: str) -> int:
        """Processes the kernel's OOM killer ended in this cgroup (0 if unknown)."""
        relative = cgroup_path.strip("/")
        if self.mode is CgroupMode.V2:
            assert self.unified_root is not None
            text = _read_if_present(self.unified_root / relative / "memory.events")
        else:
            memory = self.v1_dir("memory", cgroup_path)
            if memory is None:
                return 0
            text = _read_if_present(memory / "memory.oom_control")
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def exists(self, cgroup_path: str) -> bool:
        return any(d.is_dir() for d in self.dirs(cgroup_path))

    def remove(self, cgroup_path: str, timeout_s: float = 2.0) -> None:
        """Remove the cgroup and any children left in it; a missing cgroup is fine. On a
        hybrid host the unified tree is swept too: runc mirrors its cgroups there."""
        relative = cgroup_path.strip("/")
        for directory in {*self.dirs(cgroup_path), *(root / relative for root in self.roots)}:
            _remove_tree(directory, timeout_s)


def _kernel_controllers(proc_cgroups: Path) -> set[str]:
    try:
        lines = proc_cgroups.read_text().splitlines()
    except OSError:
        return set()
    return {line.split()[0] for line in lines if line and not line.startswith("#")}


def _create_v1(root: Path, cgroup_path: str, *, cpuset: bool) -> None:
    current = root
    for part in Path(cgroup_path.strip("/")).parts:
        parent, current = current, current / part
        current.mkdir(exist_ok=True)
        if cpuset:
            # A new v1 cpuset starts empty and refuses tasks until it inherits cpus and mems.
            # Fill it even when another pod made it: that pod may not have filled it yet.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not _read_if_present(current / name).strip():
                    (current / name).write_text((parent / name).read_text())


def _read_if_present(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _create_v2(root: Path, cgroup_path: str) -> None:
    current = root
    for part in Path(cgroup_path.strip("/")).parts:
        _enable_v2_controllers(current)
        current = current / part
        current.mkdir(exist_ok=True)


def _enable_v2_controllers(directory: Path) -> None:
    available = set((directory / "cgroup.controllers").read_text().split())
    enabled = set((directory / "cgroup.subtree_control").read_text().split())
    wanted = [c for c in _V2_CONTROLLERS if c in available and c not in enabled]
    if wanted:
        (directory / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


def _remove_tree(directory: Path, timeout_s: float) -> None:
    if not directory.is_dir():
        return
    children = [Path(dirpath) for dirpath, _, _ in os.walk(directory, topdown=False)]
    for child in children:
        _rmdir_when_empty(child, timeout_s)


def _rmdir_when_empty(directory: Path, timeout_s: float) -> None:
    # rmdir answers EBUSY while a killed task is still leaving the cgroup.
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def pod_cgroup_path(driver: str, parent: str, sandbox_id: str) -> str:
    """The pod's own cgroup below `parent`, in the notation of the cgroup driver."""
    if ".." in parent.split("/"):
        raise InvalidArgument(f"linux.cgroup_parent {parent!r} must not contain '..'")
    if driver == "systemd":
        return f"{systemd_slice_path(parent)}/moorage-{sandbox_id}.scope"
    return f"/{parent.strip('/')}/moorage-{sandbox_id}".replace("//", "/")


def systemd_slice_path(slice_name: str) -> str:
    """Expand `a-b-c.slice` to `/a.slice/a-b.slice/a-b-c.slice`, as systemd lays slices out."""
    if slice_name in ("", "-.slice"):
        return ""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise InvalidArgument(
            f"linux.cgroup_parent {slice_name!r} is not a systemd slice name (name.slice)"
        )
    stem = slice_name.removesuffix(".slice")
    parts = stem.split("-")
    if any(not p for p in parts):
        raise InvalidArgument(f"linux.cgroup_parent {slice_name!r} is not a valid slice name")
    return "".join("/" + "-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))
