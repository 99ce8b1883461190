"""What the CRI front reads from the runtime: rows through the managers, never their stores,
and the verbose details as plain data."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runtime.containers.manager import ContainerManager
from runtime.containers.model import ContainerState
from runtime.errors import FailedPrecondition, NotFound
from runtime.images.manager import ImageManager
from runtime.pods.manager import SandboxManager
from runtime.pods.model import InfraProcess, SandboxState
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore, reserved_name
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from runtime.streaming.sessions import StreamingSessions
from tests.unit.builders import container, sandbox
from tests.unit.fake_hosts import FakeContainerHost, FakeSandboxHost


@pytest.fixture
def sandboxes(settings: RuntimeSettings, db: StateDB) -> SandboxManager:
    return SandboxManager(settings, SandboxStore(db), FakeSandboxHost())


@pytest.fixture
def containers(
    settings: RuntimeSettings, db: StateDB, sandboxes: SandboxManager
) -> ContainerManager:
    images = ImageManager(settings, db)
    return ContainerManager(
        settings, ContainerStore(db), sandboxes.store, images, FakeContainerHost()
    )


def test_sandboxes_are_found_by_prefix_and_all_includes_half_built_ones(
    sandboxes: SandboxManager,
) -> None:
    sandboxes.store.reserve(sandbox("aa11", name="web"))
    sandboxes.store.reserve(sandbox("bb22", name="db", state=SandboxState.CREATING))

    found = sandboxes.find("aa")
    assert found is not None
    assert found.id == "aa11"
    assert sandboxes.find("bb22") is None
    assert sorted(s.id for s in sandboxes.all()) == ["aa11", "bb22"]


def test_all_is_a_copy_that_later_changes_leave_alone(
    sandboxes: SandboxManager, containers: ContainerManager
) -> None:
    pod = sandbox("aa11")
    sandboxes.store.reserve(pod)
    row = container("c1", sandbox_id=pod.id)
    containers.store.reserve(row, reserved_name(row, pod.name))
    pods, rows = sandboxes.all(), containers.all()

    sandboxes.store.delete(pod.id)
    containers.store.delete(row.id)

    assert [s.id for s in pods] == ["aa11"]
    assert [c.id for c in rows] == ["c1"]
    assert sandboxes.all() == []
    assert containers.all() == []


def test_all_containers_include_those_still_being_created(containers: ContainerManager) -> None:
    row = replace(container("c1"), state=ContainerState.CREATING)
    containers.store.reserve(row, "c1_pod_0")

    assert containers.select() == []
    assert [c.id for c in containers.all()] == ["c1"]


def test_streams_are_handed_out_for_running_containers_in_ready_pods_only(
    settings: RuntimeSettings, sandboxes: SandboxManager, containers: ContainerManager
) -> None:
    streams = StreamingSessions(settings, containers, sandboxes, {})
    ready, stopped = sandbox("aa11"), sandbox("bb22", name="db", state=SandboxState.NOTREADY)
    for pod in (ready, stopped):
        sandboxes.store.reserve(pod)
    running = container("c1", sandbox_id=ready.id)
    exited = replace(container("c2", name="side", sandbox_id=ready.id), state=ContainerState.EXITED)
    orphan = container("c3", sandbox_id=stopped.id)
    for row in (running, exited, orphan):
        containers.store.reserve(row, row.id)

    assert streams.streamable("c1") == running
    assert streams.forwardable("aa") == ready
    with pytest.raises(FailedPrecondition, match="container c2 is not running"):
        streams.streamable("c2")
    with pytest.raises(FailedPrecondition, match="pod sandbox bb22 is not ready"):
        streams.streamable("c3")
    with pytest.raises(FailedPrecondition, match="pod sandbox bb22 is not ready"):
        streams.forwardable("bb22")
    with pytest.raises(NotFound):
        streams.forwardable("cc")


def test_container_verbose_info_names_its_processes_and_bundle() -> None:
    assert container("c1", sandbox_id="pod1").verbose_info() == {
        "pid": 42,
        "conmon_pid": 41,
        "bundle": "/b",
        "runtime": "runc",
        "sandbox_id": "pod1",
    }


def test_sandbox_verbose_info_locates_the_kernel_objects() -> None:
    pod = sandbox("a1", infra=InfraProcess(pid=77, start_ticks=1))

    info = pod.verbose_info()

    assert info["pins"] == pod.pins
    assert info["cgroup"] == pod.cgroup_path
    assert info["pids"] == {"infra": 77}
    assert info["name"] == pod.name
    assert info["cgroup_parent"] == pod.config.cgroup_parent
