"""CgroupReader on real v1 cgroups of this host, charged by a real process."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from metrics.cgroup_reader import CgroupReader
from runtime.host.cgroups import CgroupLayout, CgroupMode

ALLOCATED_BYTES = 64 << 20
# Waits until it sits in the test cgroup, so the memory is charged there, then allocates,
# touches every page, burns some CPU and idles.
CHILD = f"""
import sys, time
sys.stdin.readline()
hoard = b"a" * {ALLOCATED_BYTES}
end = time.monotonic() + 0.3
while time.monotonic() < end:
    pass
print("ready", flush=True)
time.sleep(60)
"""


def v1_layout() -> CgroupLayout:
    layout = CgroupLayout.detect()
    if layout.mode is CgroupMode.V2:
        pytest.skip("needs a host with v1 hierarchies")
    return layout


def hierarchy_root(layout: CgroupLayout, controller: str) -> Path:
    return next(root for h, root in layout.v1_roots.items() if controller in h.split(","))


def test_a_process_in_the_cgroup_shows_in_cpu_memory_and_pids() -> None:
    layout = v1_layout()
    reader = CgroupReader.of(layout.v1_roots, layout.unified_root)
    cgroup = f"/moorage-test-{uuid.uuid4().hex[:10]}"
    child: subprocess.Popen[str] | None = None
    try:
        layout.create(cgroup)
        (hierarchy_root(layout, "memory") / cgroup[1:] / "memory.limit_in_bytes").write_text(
            str(512 << 20)
        )
        (hierarchy_root(layout, "pids") / cgroup[1:] / "pids.max").write_text("100")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert child.stdin is not None and child.stdout is not None
        layout.add_process(cgroup, child.pid)
        before = reader.read(cgroup)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "ready\n"
        after = reader.read(cgroup)

        assert before is not None and after is not None
        assert before.cpu.usage_ns is not None and after.cpu.usage_ns is not None
        assert after.cpu.usage_ns - before.cpu.usage_ns >= 200_000_000
        assert after.cpu.user_ns is not None and after.cpu.user_ns > 0
        assert after.cpu.periods == 0  # no quota, so CFS bandwidth never ran
        assert after.cpu_spec.quota is None
        assert after.cpu_spec.shares == 1024
        assert after.memory.working_set_bytes is not None
        assert after.memory.working_set_bytes >= ALLOCATED_BYTES
        assert after.memory.rss_bytes is not None and after.memory.rss_bytes >= ALLOCATED_BYTES
        assert after.memory.limit_bytes == 512 << 20
        assert after.memory.swap_bytes is not None
        assert after.memory.oom_kills == 0
        assert after.pids.current == 1
        assert after.pids.limit == 100
    finally:
        if child is not None:
            child.kill()
            child.wait()
        layout.remove(cgroup)
    assert reader.read(cgroup) is None


def test_a_fresh_cgroup_without_limits_reads_as_unlimited() -> None:
    layout = v1_layout()
    reader = CgroupReader.of(layout.v1_roots, layout.unified_root)
    cgroup = f"/moorage-test-{uuid.uuid4().hex[:10]}/ctr"
    try:
        layout.create(cgroup)
        stats = reader.read(cgroup)
    finally:
        layout.remove(cgroup.rsplit("/", 1)[0])

    assert stats is not None
    assert stats.memory.limit_bytes is None
    assert stats.pids == type(stats.pids)(current=0, limit=None)
    assert stats.cpu.usage_ns == 0
    assert stats.blkio == []
