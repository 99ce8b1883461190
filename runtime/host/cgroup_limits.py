"""Writing Resources into an existing cgroup by cgroupfs, for the pod cgroups no OCI runtime
manages. The file mapping is runc's (fs and fs2 managers), so a pod and its containers read
alike.

Only the set fields are written, as `runc update` does. Every file is read before it is
written: when the kernel refuses one value, the ones already written get their old value
back, so a refused update changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import InvalidArgument
from runtime.host.cgroups import CgroupLayout, CgroupMode
from runtime.resources import Resources

Write = tuple[Path, str]


def apply_limits(layout: CgroupLayout, cgroup_path: str, resources: Resources) -> None:
    if layout.mode is CgroupMode.V2:
        assert layout.unified_root is not None
        writes = _v2_writes(layout.unified_root / cgroup_path.strip("/"), resources)
    else:
        writes = _v1_writes(layout, cgroup_path, resources)
    _write_all(writes)


def shares_to_weight(shares: int) -> int:
    """runc's mapping of v1 cpu.shares (2..262144) onto v2 cpu.weight (1..10000)."""
    return 1 + ((shares - 2) * 9999) // 262142


def _v1_writes(layout: CgroupLayout, cgroup_path: str, r: Resources) -> list[Write]:
    if r.unified:
        raise InvalidArgument("unified cgroup keys need cgroup v2; this node's pods are on v1")

    def files(controller: str, wanted: Sequence[tuple[str, object]]) -> list[Write]:
        chosen = [(name, str(value)) for name, value in wanted if value]
        if not chosen:
            return []
        directory = layout.v1_dir(controller, cgroup_path)
        if directory is None:
            raise InvalidArgument(f"this node has no {controller} cgroup hierarchy mounted")
        return [(directory / name, value) for name, value in chosen]

    # The period before the quota: the quota is meant against the new period.
    cpu = [
        ("cpu.shares", r.cpu_shares),
        ("cpu.cfs_period_us", r.cpu_period),
        ("cpu.cfs_quota_us", r.cpu_quota),
    ]
    memory = files(
        "memory",
        [
            ("memory.limit_in_bytes", r.memory_limit_bytes),
            ("memory.memsw.limit_in_bytes", r.memory_swap_limit_bytes),
        ],
    )
    return [
        *files("cpu", cpu),
        *files("cpuset", [("cpuset.cpus", r.cpuset_cpus), ("cpuset.mems", r.cpuset_mems)]),
        *_memsw_in_order(memory),
        *files(
            "hugetlb",
            [
                (f"hugetlb.{size}.limit_in_bytes", n)
                for size, n in sorted(r.hugepage_limits.items())
            ],
        ),
    ]


def _memsw_in_order(memory: list[Write]) -> list[Write]:
    """The kernel keeps memsw at or above the memory limit at every step, so a growing memsw
    is written before the limit and a shrinking one after it."""
    if len(memory) < 2:
        return memory
    limit, memsw = memory
    current = _read(memsw[0])
    grows = memsw[1] == "-1" or (current.isdigit() and int(memsw[1]) > int(current))
    return [memsw, limit] if grows else [limit, memsw]


def _v2_writes(directory: Path, r: Resources) -> list[Write]:
    writes: list[Write] = []
    if r.cpu_shares:
        writes.append((directory / "cpu.weight", str(shares_to_weight(r.cpu_shares))))
    if r.cpu_quota or r.cpu_period:
        # cpu.max holds both; the one not asked for keeps its value.
        quota, _, period = _read(directory / "cpu.max").partition(" ")
        if r.cpu_quota:
            quota = "max" if r.cpu_quota == -1 else str(r.cpu_quota)
        if r.cpu_period:
            period = str(r.cpu_period)
        writes.append((directory / "cpu.max", f"{quota or 'max'} {period or 100000}"))
    if r.cpuset_cpus:
        writes.append((directory / "cpuset.cpus", r.cpuset_cpus))
    if r.cpuset_mems:
        writes.append((directory / "cpuset.mems", r.cpuset_mems))
    if r.memory_limit_bytes:
        writes.append((directory / "memory.max", str(r.memory_limit_bytes)))
    if r.memory_swap_limit_bytes == -1:
        writes.append((directory / "memory.swap.max", "max"))
    elif r.memory_swap_limit_bytes:
        if not r.memory_limit_bytes:
            raise InvalidArgument(
                "memory_swap_limit_in_bytes needs memory_limit_in_bytes on cgroup v2 "
                "(memory.swap.max is their difference)"
            )
        swap_only = r.memory_swap_limit_bytes - r.memory_limit_bytes
        writes.append((directory / "memory.swap.max", str(swap_only)))
    for size, limit in sorted(r.hugepage_limits.items()):
        writes.append((directory / f"hugetlb.{size}.max", str(limit)))
    # Last, as in runc: an explicit unified key wins over the value mapped above.
    for key, value in sorted(r.unified.items()):
        writes.append((directory / key, value))
    return writes


def _write_all(writes: list[Write]) -> None:
    done: list[Write] = []
    for path, value in writes:
        try:
            old = path.read_text().strip()
            path.write_text(value)
        except OSError as exc:
            for done_path, old_value in reversed(done):
                with contextlib.suppress(OSError):
                    done_path.write_text(old_value)
            reason = exc.strerror or type(exc).__name__
            raise InvalidArgument(
                f"the kernel refused {value!r} for {path.name}: {reason} (limits unchanged)"
            ) from None
        done.append((path, old))


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
