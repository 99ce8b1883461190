"""SandboxManager over a recording fake host: state, undo, locking and cancellation, on a
real state.db."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from network.errors import AddressesExhausted, NetworkError
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.pods.manager import SandboxManager
from runtime.pods.model import (
    IdMapping,
    InfraProcess,
    NamespaceMode,
    PodResources,
    Sandbox,
    SandboxConfig,
    SandboxState,
    UserNamespace,
)
from runtime.resources import Resources
from runtime.settings import RuntimeSettings
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from tests.unit.builders import pod_config
from tests.unit.fake_hosts import FakeSandboxHost
from tests.waiting import wait_until_async


@pytest.fixture
def host() -> FakeSandboxHost:
    return FakeSandboxHost()


@pytest.fixture
def manager(tmp_path: Path, db: StateDB, host: FakeSandboxHost) -> SandboxManager:
    settings = RuntimeSettings(root_dir=tmp_path / "root", run_dir=tmp_path / "run")
    return SandboxManager(settings, SandboxStore(db), host)


def rows_on_disk(db: StateDB) -> list[Sandbox]:
    """What recovery would find after a crash once the queued writes are committed (the
    interceptor awaits them before answering): the rows as a new agent reads them."""
    db.wait_written()
    reopened = StateDB(db.path)
    try:
        return SandboxStore(reopened).all()
    finally:
        reopened.close()


def on_node_network(config: SandboxConfig) -> SandboxConfig:
    return replace(
        config,
        sysctls={},
        namespaces=replace(config.namespaces, network=NamespaceMode.NODE),
    )


# --- state ----------------------------------------------------------------------------------


async def test_a_run_builds_then_attaches_and_records_a_ready_pod(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    ready = await manager.run(pod_config())

    assert host.steps(ready.id) == ["build", "attach_network"]
    assert ready.state is SandboxState.READY
    assert ready.ips == ["10.85.0.7"]
    [row] = rows_on_disk(db)
    assert row.state is SandboxState.READY
    assert row.pins == {"net": f"/pins/net/{ready.id}"}
    assert row.infra == InfraProcess(4242, 99)


async def test_while_a_pod_is_built_its_row_is_on_disk_as_creating_and_hidden(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    hold = host.hold("build")
    run = asyncio.create_task(manager.run(pod_config()))
    await hold.reached.wait()

    [row] = rows_on_disk(db)
    assert row.state is SandboxState.CREATING
    assert manager.select() == []

    hold.release()
    assert (await run).id == row.id


async def test_stop_detaches_and_stops_then_the_pod_is_not_ready_and_stays_so(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    pod = await manager.run(pod_config())

    await manager.stop(pod.id)
    assert manager.status(pod.id).state is SandboxState.NOTREADY
    await manager.stop(pod.id[:12])

    assert host.steps(pod.id)[2:] == ["detach_network", "stop"] * 2
    assert manager.status(pod.id).state is SandboxState.NOTREADY


async def test_remove_tears_the_pod_down_and_forgets_it_and_a_second_remove_does_nothing(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    pod = await manager.run(pod_config())

    await manager.remove(pod.id)
    await manager.remove(pod.id)

    assert host.steps(pod.id)[2:] == ["detach_network", "remove"]
    with pytest.raises(NotFound):
        manager.status(pod.id)
    assert rows_on_disk(db) == []


async def test_stop_and_remove_of_an_unknown_pod_succeed_without_host_work(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    await manager.stop("f" * 64)
    await manager.remove("f" * 64)

    assert host.calls == []


async def test_a_pod_on_the_node_network_is_never_attached_or_detached(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    pod = await manager.run(on_node_network(pod_config()))
    await manager.stop(pod.id)
    await manager.remove(pod.id)

    assert host.steps(pod.id) == ["build", "stop", "remove"]
    assert pod.ips == []


# --- refusals and undo ----------------------------------------------------------------------


async def test_a_user_namespace_the_node_cannot_give_is_refused_before_any_host_work(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    host.userns = False
    mapping = IdMapping(host_id=100000, container_id=0, length=65536)
    config = pod_config()
    config = replace(
        config, namespaces=replace(config.namespaces, user=UserNamespace(mapping, mapping))
    )

    with pytest.raises(FailedPrecondition, match="user namespaces"):
        await manager.run(config)
    assert host.calls == []
    assert rows_on_disk(db) == []


async def test_an_unconfigured_handler_is_not_found(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    with pytest.raises(NotFound, match="runtime handler 'kata'"):
        await manager.run(replace(pod_config(), runtime_handler="kata"))
    assert host.calls == []


async def test_a_failed_build_frees_the_name_and_keeps_its_error(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    host.fail("build", InvalidArgument("config.log_directory cannot be created"))

    with pytest.raises(InvalidArgument, match="log_directory"):
        await manager.run(pod_config())
    # The build undoes its own steps: nothing else is torn down.
    assert [step for step, _ in host.calls] == ["build"]
    assert rows_on_disk(db) == []

    retried = await manager.run(pod_config())
    assert retried.state is SandboxState.READY


async def test_a_failed_attach_detaches_then_removes_and_drops_the_row(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    host.fail("attach_network", AddressesExhausted("no address left in 10.85.0.0/16"))

    with pytest.raises(AddressesExhausted):
        await manager.run(pod_config())

    [(_, pod_id), *_] = host.calls
    assert host.steps(pod_id) == ["build", "attach_network", "detach_network", "remove"]
    assert rows_on_disk(db) == []


async def test_a_failing_detach_in_the_undo_still_removes_the_pod_and_the_first_error_wins(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    host.fail("attach_network", AddressesExhausted("no address left"))
    host.fail("detach_network", NetworkError("bridge is gone"))

    with pytest.raises(AddressesExhausted, match="no address left"):
        await manager.run(pod_config())

    assert [step for step, _ in host.calls][-1] == "remove"
    assert rows_on_disk(db) == []


# --- cancellation ---------------------------------------------------------------------------


async def test_a_caller_cancelled_during_the_build_leaves_a_whole_ready_pod(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    hold = host.hold("build")
    run = asyncio.create_task(manager.run(pod_config()))
    await hold.reached.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    hold.release()
    await manager.drain()

    [row] = rows_on_disk(db)
    assert row.state is SandboxState.READY
    assert host.steps(row.id) == ["build", "attach_network"]


async def test_a_caller_cancelled_before_a_failing_attach_leaves_nothing(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    hold = host.hold("attach_network")
    host.fail("attach_network", AddressesExhausted("no address left"))
    run = asyncio.create_task(manager.run(pod_config()))
    await hold.reached.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    hold.release()
    await manager.drain()

    assert [step for step, _ in host.calls] == [
        "build",
        "attach_network",
        "detach_network",
        "remove",
    ]
    assert rows_on_disk(db) == []


# --- serialisation --------------------------------------------------------------------------


async def test_two_stops_of_one_pod_run_one_after_the_other(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    pod = await manager.run(pod_config())
    hold = host.hold("stop")
    first = asyncio.create_task(manager.stop(pod.id))
    await hold.reached.wait()
    second = asyncio.create_task(manager.stop(pod.id))
    assert await wait_until_async(lambda: manager._locks.users(pod.id) == 2)

    hold.release()
    await asyncio.gather(first, second)

    assert host.steps(pod.id)[2:] == ["detach_network", "stop", "detach_network", "stop"]


async def test_a_remove_waits_for_the_stop_under_way(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    pod = await manager.run(pod_config())
    hold = host.hold("stop")
    stop = asyncio.create_task(manager.stop(pod.id))
    await hold.reached.wait()
    remove = asyncio.create_task(manager.remove(pod.id))
    assert await wait_until_async(lambda: manager._locks.users(pod.id) == 2)

    hold.release()
    await asyncio.gather(stop, remove)

    assert host.steps(pod.id)[2:] == ["detach_network", "stop", "detach_network", "remove"]
    assert rows_on_disk(db) == []


async def test_a_stop_of_one_pod_does_not_wait_for_the_stop_of_another(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    slow = await manager.run(pod_config("slow", uid="uid-slow"))
    quick = await manager.run(pod_config("quick", uid="uid-quick"))
    hold = host.hold("stop", slow.id)
    slow_stop = asyncio.create_task(manager.stop(slow.id))
    await hold.reached.wait()

    await asyncio.wait_for(manager.stop(quick.id), timeout=5)

    assert manager.status(quick.id).state is SandboxState.NOTREADY
    assert manager.status(slow.id).state is SandboxState.READY
    hold.release()
    await slow_stop
    assert manager.status(slow.id).state is SandboxState.NOTREADY


# --- pod resources --------------------------------------------------------------------------

POD_RESOURCES = PodResources(
    resources=Resources(cpu_shares=1024, memory_limit_bytes=256 << 20),
    overhead=Resources(cpu_shares=128, memory_limit_bytes=64 << 20),
)


async def test_updated_pod_resources_reach_the_cgroup_summed_and_the_row_as_asked(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    pod = await manager.run(pod_config())

    updated = await manager.update_resources(pod.id[:12], POD_RESOURCES)

    assert host.limits[pod.id] == Resources(cpu_shares=1152, memory_limit_bytes=320 << 20)
    assert updated.resources == POD_RESOURCES
    [row] = rows_on_disk(db)
    assert row.resources == POD_RESOURCES
    assert manager.status(pod.id).verbose_info()["resources"] == {
        "resources": {**vars(Resources()), "cpu_shares": 1024, "memory_limit_bytes": 256 << 20},
        "overhead": {**vars(Resources()), "cpu_shares": 128, "memory_limit_bytes": 64 << 20},
    }


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (PodResources(resources=Resources(memory_limit_bytes=-1)), "resources.memory_limit"),
        (PodResources(overhead=Resources(cpu_shares=1)), "overhead.cpu_shares"),
        (PodResources(resources=Resources(cpuset_cpus="0-")), "resources.cpuset_cpus"),
        (
            PodResources(Resources(cpu_shares=200_000), Resources(cpu_shares=100_000)),
            r"resources\+overhead.cpu_shares 300000",
        ),
    ],
)
async def test_invalid_pod_resources_are_refused_and_the_old_ones_stay(
    manager: SandboxManager,
    host: FakeSandboxHost,
    db: StateDB,
    resources: PodResources,
    message: str,
) -> None:
    pod = await manager.run(pod_config())
    await manager.update_resources(pod.id, POD_RESOURCES)

    with pytest.raises(InvalidArgument, match=message):
        await manager.update_resources(pod.id, resources)

    assert host.steps(pod.id).count("update_resources") == 1
    assert [row.resources for row in rows_on_disk(db)] == [POD_RESOURCES]


async def test_pod_resources_the_host_refuses_leave_the_row_as_it_was(
    manager: SandboxManager, host: FakeSandboxHost, db: StateDB
) -> None:
    pod = await manager.run(pod_config())
    host.fail("update_resources", InvalidArgument("the kernel refused"))

    with pytest.raises(InvalidArgument, match="the kernel refused"):
        await manager.update_resources(pod.id, POD_RESOURCES)

    assert manager.status(pod.id).resources is None
    assert [row.resources for row in rows_on_disk(db)] == [None]


async def test_pod_resources_of_an_unknown_or_unnamed_pod_are_refused(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    with pytest.raises(NotFound):
        await manager.update_resources("f" * 64, POD_RESOURCES)
    with pytest.raises(InvalidArgument, match="empty"):
        await manager.update_resources("", POD_RESOURCES)

    assert host.calls == []


async def test_pod_resources_of_a_stopped_pod_are_a_failed_precondition(
    manager: SandboxManager, host: FakeSandboxHost
) -> None:
    pod = await manager.run(pod_config())
    await manager.stop(pod.id)

    with pytest.raises(FailedPrecondition, match="notready"):
        await manager.update_resources(pod.id, POD_RESOURCES)

    assert "update_resources" not in host.steps(pod.id)
