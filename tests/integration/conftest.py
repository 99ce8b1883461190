"""Fixtures for tests on real kernel objects: unique names per run, removed even on failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from runtime.host.cgroups import CgroupLayout
from runtime.settings import RuntimeSettings


def _unmount_below(directory: Path) -> None:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted(points, key=len, reverse=True):
        if point.startswith(str(directory) + "/"):
            subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    parent = f"/moorage-it-{uuid.uuid4().hex[:8]}"
    yield parent
    layout = CgroupLayout.detect()
    for root in layout.roots:
        top = root / parent.strip("/")
        if top.is_dir():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                Path(dirpath).rmdir()


@pytest.fixture
def settings(cgroup_parent: str) -> Iterator[RuntimeSettings]:
    # Short paths: unix socket and mount paths are limited.
    base = Path(f"/tmp/mit-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    try:
        yield replace(
            RuntimeSettings(),
            root_dir=base / "root",
            run_dir=base / "run",
            default_cgroup_parent=cgroup_parent,
        )
    finally:
        _unmount_below(base)
        shutil.rmtree(base)
