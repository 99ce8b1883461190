"""Host figures for hack/bench, below the agent: create+start of a busybox container through
conmon with each OCI runtime, and one scrape's reads of 100 v1 cgroups."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from metrics.cgroup_reader import CgroupReader
from runtime.host.cgroups import CgroupLayout, CgroupMode
from runtime.oci.conmon import create_container
from runtime.oci.exit_files import exit_recorded
from runtime.oci.runtime_cli import OciRuntime
from tests.e2e.kernel import CGROUP_FS, remove_cgroup_dir
from tests.waiting import wait_until_async

BUSYBOX = Path("/bin/busybox")
CONMON = Path(shutil.which("conmon") or "/usr/bin/conmon")
UNIFIED = CGROUP_FS / "unified"
CGROUPS_PER_SCRAPE = 100


class Timings(Protocol):
    def record(self, label: str, started: float) -> None: ...


def _bundle(base: Path, container_id: str, cgroup_parent: str) -> Path:
    bundle = base / container_id
    rootfs = bundle / "rootfs"
    for directory in ("bin", "proc", "dev", "tmp"):
        (rootfs / directory).mkdir(parents=True)
    os.link(BUSYBOX, rootfs / "bin" / "true")
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": ["PATH=/bin"],
            "cwd": "/",
        },
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "cgroupsPath": f"{cgroup_parent}/{container_id}",
            "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
        },
    }
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def _exited(exits: Path, container_id: str) -> Callable[[], bool]:
    return lambda: exit_recorded(exits / container_id)


async def _create_and_start(runtime: OciRuntime, base: Path, n: int, timings: Timings) -> None:
    hidden = " (with private mount ns)" if runtime.hide_mount else ""
    cgroup_parent = f"/moorage-bench-{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(n):
            container_id = f"mb-{uuid.uuid4().hex[:12]}"
            bundle = _bundle(base, container_id, cgroup_parent)
            started = time.perf_counter()
            await create_container(
                CONMON, runtime, container_id=container_id, bundle=bundle, log_path=None,
                exit_dir=base / "exits", socket_dir=base / "attach", tty=False, stdin=False,
                stdin_once=False,
            )  # fmt: skip
            await runtime.start(container_id)
            timings.record(f"conmon create+start, {runtime.name}{hidden}", started)
            await wait_until_async(_exited(base / "exits", container_id))
            await runtime.delete(container_id, force=True)
    finally:
        for hierarchy in CGROUP_FS.iterdir():
            top = hierarchy / cgroup_parent.strip("/")
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                remove_cgroup_dir(Path(dirpath), timeout_s=1.0)


def bench_conmon(n: int, timings: Timings) -> list[str]:
    if not (CONMON.is_file() and BUSYBOX.is_file()):
        return [f"conmon create+start: skipped, needs {CONMON} and {BUSYBOX}"]
    notes = []
    for name in ("runc", "crun"):
        binary = shutil.which(name)
        if binary is None:
            notes.append(f"conmon create+start, {name}: skipped, not installed")
            continue
        # crun 1.8 refuses to create containers on a hybrid host (FIELD-NOTES).
        hide = UNIFIED if name == "crun" and os.path.ismount(UNIFIED) else None
        with tempfile.TemporaryDirectory(prefix="mbc-") as base:
            runtime = OciRuntime(
                name, Path(binary), Path(base) / "oci", Path(base) / "wrappers", hide_mount=hide
            )
            asyncio.run(_create_and_start(runtime, Path(base), n, timings))
    return notes


def bench_cgroup_reads(n: int, timings: Timings) -> list[str]:
    """What one scrape reads with 100 containers, on the dentry cache an agent has warmed."""
    layout = CgroupLayout.detect()
    if layout.mode is CgroupMode.V2:
        return ["v1 cgroup reads: skipped, the host has no v1 hierarchies"]
    reader = CgroupReader.of(layout.v1_roots, layout.unified_root)
    parent = f"/moorage-bench-{uuid.uuid4().hex[:10]}"
    paths = [f"{parent}/ctr-{i}" for i in range(CGROUPS_PER_SCRAPE)]
    try:
        for path in paths:
            layout.create(path)
        for path in paths:
            reader.read(path)
        for _ in range(n):
            started = time.perf_counter()
            for path in paths:
                reader.read(path)
            timings.record(f"read {CGROUPS_PER_SCRAPE} v1 cgroups", started)
    finally:
        layout.remove(parent)
    return []
