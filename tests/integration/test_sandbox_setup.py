"""Building, tearing down and recovering pod sandboxes on real namespaces and cgroups."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

import pytest

from network.netns import is_pinned
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.host.cgroups import CgroupLayout, pod_cgroup_path
from runtime.host.namespaces import pin_current, unshared
from runtime.host.processes import is_running
from runtime.pods.model import (
    NamespaceMode,
    NamespaceOptions,
    PodMetadata,
    Sandbox,
    SandboxConfig,
    SandboxState,
)
from runtime.pods.recovery import reconcile_sandboxes
from runtime.pods.setup import build_sandbox, remove_sandbox
from runtime.pods.sysctls import validate_sysctls
from runtime.settings import RuntimeSettings
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from tests.netutil import in_new_thread


def new_sandbox(settings: RuntimeSettings, pid: NamespaceMode, **config: object) -> Sandbox:
    sandbox_id = secrets.token_hex(32)
    paths = settings.layout.sandbox(sandbox_id)
    cfg = SandboxConfig(
        metadata=PodMetadata("p", secrets.token_hex(4), "it"),
        hostname="it-pod",
        namespaces=NamespaceOptions(pid=pid),
    )
    cfg = replace(cfg, **config)  # type: ignore[arg-type]
    return Sandbox(
        id=sandbox_id,
        config=cfg,
        state=SandboxState.CREATING,
        created_at_ns=time.time_ns(),
        runtime_handler="crun",
        cgroup_path=pod_cgroup_path("cgroupfs", settings.default_cgroup_parent, sandbox_id),
        shm_path=str(paths.shm),
        resolv_conf_path=str(paths.resolv_conf),
    )


def leftovers(settings: RuntimeSettings, sandbox: Sandbox, layout: CgroupLayout) -> list[str]:
    found = [str(p) for p in settings.run_dir.rglob("*") if p.is_file() or is_pinned(p)]
    found += [str(p) for p in settings.layout.sandboxes_dir.glob("*")]
    found += [str(d) for d in layout.dirs(sandbox.cgroup_path) if d.exists()]
    with open("/proc/self/mounts") as mounts:
        found += [line for line in mounts if str(settings.run_dir) in line]
    return found


def test_built_sandbox_has_its_infra_in_the_pod_cgroup_and_removal_leaves_nothing(
    settings: RuntimeSettings,
) -> None:
    layout = CgroupLayout.detect()
    sandbox = new_sandbox(settings, NamespaceMode.POD)
    built = in_new_thread(lambda: build_sandbox(settings, layout, sandbox, {}))
    ready = replace(sandbox, pins=built.pins, infra=built.infra, state=SandboxState.READY)
    try:
        assert built.infra is not None and is_running(built.infra)
        for directory in layout.dirs(sandbox.cgroup_path):
            procs = (directory / "cgroup.procs").read_text().split()
            assert str(built.infra.pid) in procs, directory
        assert os.readlink(f"/proc/{built.infra.pid}/ns/net") == (
            f"net:[{os.stat(built.pins['net']).st_ino}]"
        )
    finally:
        remove_sandbox(settings, layout, ready, built.infra_child)
    assert not is_running(built.infra)
    assert leftovers(settings, sandbox, layout) == []


def test_a_sysctl_the_kernel_lacks_undoes_every_step(settings: RuntimeSettings) -> None:
    layout = CgroupLayout.detect()
    sysctls = {"net.ipv4.moorage_no_such_knob": "1"}
    sandbox = new_sandbox(settings, NamespaceMode.POD, sysctls=sysctls)
    paths = validate_sysctls(sysctls, sandbox.config.namespaces)
    with pytest.raises(InvalidArgument, match="moorage_no_such_knob"):
        in_new_thread(lambda: build_sandbox(settings, layout, sandbox, paths))
    assert leftovers(settings, sandbox, layout) == []


def test_a_missing_infra_binary_fails_the_precondition_and_undoes_every_step(
    settings: RuntimeSettings,
) -> None:
    layout = CgroupLayout.detect()
    broken = replace(settings, infra_command=("/nonexistent/catatonit", "-P"))
    sandbox = new_sandbox(broken, NamespaceMode.POD)
    with pytest.raises(FailedPrecondition, match="catatonit"):
        in_new_thread(lambda: build_sandbox(broken, layout, sandbox, {}))
    assert leftovers(settings, sandbox, layout) == []


def test_recovery_removes_a_half_built_sandbox_and_an_orphan_pin(
    settings: RuntimeSettings,
) -> None:
    layout = CgroupLayout.detect()
    settings.root_dir.mkdir(parents=True)
    store = SandboxStore(StateDB(settings.layout.state_db))
    sandbox = new_sandbox(settings, NamespaceMode.POD)
    built = in_new_thread(lambda: build_sandbox(settings, layout, sandbox, {}))
    # The agent died after building but before marking the row READY.
    store.reserve(replace(sandbox, pins=built.pins, infra=built.infra))
    orphan = settings.layout.pin_path("net", "f" * 64)

    def pin_orphan() -> None:
        with unshared(["net"]):
            pin_current("net", orphan)

    in_new_thread(pin_orphan)

    fixed = reconcile_sandboxes(settings, layout, store)

    assert any(sandbox.id in line and "half-built" in line for line in fixed)
    assert any("orphan net pin" in line for line in fixed)
    assert store.all() == []
    assert built.infra is not None and not is_running(built.infra)
    assert not orphan.exists()
    assert leftovers(settings, sandbox, layout) == []
    if built.infra_child is not None:
        built.infra_child.wait()


def test_recovery_marks_a_pod_whose_infra_died_not_ready(settings: RuntimeSettings) -> None:
    layout = CgroupLayout.detect()
    settings.root_dir.mkdir(parents=True)
    store = SandboxStore(StateDB(settings.layout.state_db))
    sandbox = new_sandbox(settings, NamespaceMode.POD)
    built = in_new_thread(lambda: build_sandbox(settings, layout, sandbox, {}))
    ready = replace(sandbox, pins=built.pins, infra=built.infra, state=SandboxState.READY)
    store.reserve(ready)
    try:
        assert built.infra_child is not None
        built.infra_child.kill()
        built.infra_child.wait()

        fixed = reconcile_sandboxes(settings, layout, store)

        assert fixed == [
            f"sandbox {sandbox.id} is not ready: infra process "
            f"{built.infra.pid if built.infra else 0} has exited"
        ]
        assert store.get(sandbox.id).state is SandboxState.NOTREADY
        assert not any(is_pinned(Path(p)) for p in built.pins.values())
    finally:
        remove_sandbox(settings, layout, store.get(sandbox.id), None)
    assert leftovers(settings, sandbox, layout) == []


def test_recovery_keeps_a_healthy_pod_as_it_is(settings: RuntimeSettings) -> None:
    layout = CgroupLayout.detect()
    settings.root_dir.mkdir(parents=True)
    store = SandboxStore(StateDB(settings.layout.state_db))
    sandbox = new_sandbox(settings, NamespaceMode.CONTAINER)
    built = in_new_thread(lambda: build_sandbox(settings, layout, sandbox, {}))
    ready = replace(sandbox, pins=built.pins, state=SandboxState.READY)
    store.reserve(ready)
    try:
        assert reconcile_sandboxes(settings, layout, store) == []
        assert store.get(sandbox.id) == ready
        assert all(is_pinned(Path(p)) for p in built.pins.values())
    finally:
        remove_sandbox(settings, layout, ready, None)
