"""Recovery of container rows on the real host: conmon, runc and crun, busybox containers."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from runtime.containers.model import ContainerState
from runtime.containers.recovery import conmon_pids, reconcile_containers
from runtime.host.cgroups import CgroupLayout
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from tests.integration import test_conmon
from tests.integration.test_conmon import BUSYBOX, CONMON, Host
from tests.unit.builders import container
from tests.waiting import wait_until_async

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not CONMON.is_file(), reason="needs conmon"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs busybox-static"),
]

host = test_conmon.host


async def test_a_half_created_container_is_deleted_through_its_runtime(host: Host) -> None:
    """The agent died between conmon's create and the CREATED row: recovery ends its conmon,
    deletes it through the handler's OCI runtime and drops the row."""
    container_id, _, _ = await host.create(["/bin/sleep", "60"])
    assert conmon_pids(container_id)
    settings = RuntimeSettings(root_dir=host.base / "root", run_dir=host.base / "run")
    db = StateDB(host.base / "state.db")
    store, sandboxes = ContainerStore(db), SandboxStore(db)
    half = replace(
        container(container_id, sandbox_id="gone"),
        state=ContainerState.CREATING,
        runtime_handler=host.runtime.name,
    )
    store.reserve(half, f"{container_id}_pod")

    fixed = await reconcile_containers(
        settings, CgroupLayout.detect(), (store, sandboxes), {host.runtime.name: host.runtime}
    )

    assert fixed == [f"removed half-created container {container_id}"]
    assert store.all() == []
    assert await host.runtime.state(container_id) is None
    assert await wait_until_async(lambda: not conmon_pids(container_id), 2.0)
    db.close()


async def test_an_interrupted_start_is_undone_through_its_runtime(host: Host) -> None:
    """The agent died in a start, between conmon's create and the row's conmon pid: recovery
    ends that conmon and deletes the container from the runtime; without its rootfs mount
    (gone, as after a reboot) the container cannot start again and is reported exited."""
    container_id, _, _ = await host.create(["/bin/sleep", "60"])
    settings = RuntimeSettings(root_dir=host.base / "root", run_dir=host.base / "run")
    db = StateDB(host.base / "state.db")
    store, sandboxes = ContainerStore(db), SandboxStore(db)
    half = replace(
        container(container_id, sandbox_id="gone"),
        state=ContainerState.CREATED,
        runtime_handler=host.runtime.name,
        pid=0,
        conmon_pid=0,
    )
    store.reserve(half, f"{container_id}_pod")

    fixed = await reconcile_containers(
        settings, CgroupLayout.detect(), (store, sandboxes), {host.runtime.name: host.runtime}
    )

    assert fixed == [
        f"undid the interrupted start of container {container_id}",
        f"container {container_id} lost its rootfs before it started",
    ]
    assert await host.runtime.state(container_id) is None
    assert await wait_until_async(lambda: not conmon_pids(container_id), 2.0)
    [ended] = store.all()
    assert (ended.state, ended.reason) == (ContainerState.EXITED, "Unknown")
    db.close()


async def test_a_removal_the_agent_died_in_is_finished(host: Host) -> None:
    """RemoveContainer answered, the agent died before the clean-up: recovery deletes the
    container through its runtime and drops the row."""
    container_id, _, _ = await host.create(["/bin/sleep", "60"])
    settings = RuntimeSettings(root_dir=host.base / "root", run_dir=host.base / "run")
    db = StateDB(host.base / "state.db")
    store = ContainerStore(db)
    store.reserve(
        replace(container(container_id, sandbox_id="gone"), runtime_handler=host.runtime.name),
        f"{container_id}_pod",
    )
    store.retire(container_id)
    store = ContainerStore(db)
    assert store.find(container_id) is None

    fixed = await reconcile_containers(
        settings,
        CgroupLayout.detect(),
        (store, SandboxStore(db)),
        {host.runtime.name: host.runtime},
    )

    assert fixed == [f"finished removing container {container_id}"]
    assert store.all() == []
    assert await host.runtime.state(container_id) is None
    db.close()
