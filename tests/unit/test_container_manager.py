"""ContainerManager over a recording fake host: state, events, undo, locking and
cancellation, on a real state.db with a real image record."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from runtime.containers.events import ContainerEvent, EventKind
from runtime.containers.manager import ContainerManager
from runtime.containers.model import Container, ContainerConfig, ContainerState
from runtime.errors import (
    ContainerRuntimeFailed,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from runtime.images.manager import ImageManager
from runtime.images.model import Image
from runtime.oci.conmon import ConmonError, ContainerCreateError, ExecResult
from runtime.oci.runtime_cli import OciRuntimeError
from runtime.pods.model import SandboxState
from runtime.resources import Resources
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from tests.unit.builders import sandbox
from tests.unit.fake_hosts import FakeContainerHost
from tests.waiting import wait_until_async

POD = "a1b2c3"


@pytest.fixture
def sandboxes(db: StateDB) -> SandboxStore:
    store = SandboxStore(db)
    store.reserve(sandbox(POD))
    return store


@pytest.fixture
def image_id(settings: RuntimeSettings, db: StateDB) -> str:
    """A pulled image, as far as containers see one: its record and its config blob."""
    config = json.dumps({"config": {"StopSignal": "SIGQUIT"}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    images = ImageManager(settings, db)
    images.content.write(digest, config)
    images.store.add(Image(digest, "sha256:" + "0" * 64, ("x:1",), (), (), 1, "", 1))
    return digest


@pytest.fixture
def host() -> FakeContainerHost:
    return FakeContainerHost()


@pytest.fixture
def manager(
    settings: RuntimeSettings,
    db: StateDB,
    sandboxes: SandboxStore,
    image_id: str,
    host: FakeContainerHost,
) -> ContainerManager:
    containers = ContainerManager(
        settings, ContainerStore(db), sandboxes, ImageManager(settings, db), host
    )
    host.on_exit = containers.on_exit
    return containers


@pytest.fixture
async def events(manager: ContainerManager) -> AsyncIterator[list[ContainerEvent]]:
    seen: list[ContainerEvent] = []

    async def collect() -> None:
        async for event in manager.events.subscribe():
            seen.append(event)

    task = asyncio.create_task(collect())
    assert await wait_until_async(lambda: manager.events.subscribers == 1)
    yield seen
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def config(image_id: str, name: str = "app") -> ContainerConfig:
    return ContainerConfig(name=name, image=image_id, log_path=f"{name}/0.log")


def rows_on_disk(db: StateDB) -> list[Container]:
    """What recovery would find after a crash once the queued writes are committed (the
    interceptor awaits them before answering): the rows as a new agent reads them."""
    db.wait_written()
    reopened = StateDB(db.path)
    try:
        return ContainerStore(reopened).all()
    finally:
        reopened.close()


async def kinds_of(events: list[ContainerEvent], count: int) -> list[tuple[EventKind, str]]:
    await wait_until_async(lambda: len(events) >= count)
    return [(e.kind, e.container.id) for e in events]


async def running(manager: ContainerManager, image_id: str, name: str = "app") -> Container:
    created = await manager.create(POD, config(image_id, name))
    await manager.start(created.id)
    return manager.status(created.id)


# --- state and events -----------------------------------------------------------------------


async def test_a_create_only_builds_and_the_start_hands_it_to_the_runtime(
    manager: ContainerManager,
    host: FakeContainerHost,
    image_id: str,
    db: StateDB,
    events: list[ContainerEvent],
) -> None:
    created = await manager.create(POD, config(image_id))

    assert host.steps(created.id) == ["build"]
    [row] = rows_on_disk(db)
    assert (row.state, row.conmon_pid, row.pid) == (ContainerState.CREATED, 0, 0)
    assert row.stop_signal == "SIGQUIT"
    assert row.log_path.endswith("app/0.log")
    assert await kinds_of(events, 1) == [(EventKind.CREATED, created.id)]

    await manager.start(created.id)

    assert host.steps(created.id) == ["build", "create", "created", "start"]
    [row] = rows_on_disk(db)
    assert (row.state, row.conmon_pid, row.pid) == (ContainerState.RUNNING, 101, 102)


async def test_a_runtime_refusing_the_create_fails_the_start_and_ends_the_container(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))
    host.fail("create", ContainerCreateError("crun: executable file not found"))

    with pytest.raises(ContainerRuntimeFailed, match="executable file not found"):
        await manager.start(created.id)

    ended = manager.status(created.id)
    assert (ended.state, ended.exit_code, ended.reason) == (
        ContainerState.EXITED,
        128,
        "ContainerCannotRun",
    )
    assert "start" not in host.steps(created.id)


async def test_limits_of_a_container_not_yet_started_wait_for_its_create(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))

    await manager.update_resources(created.id, Resources(cpu_shares=512))

    assert host.updates == [{"cpu": {"shares": 512}}]
    assert manager.status(created.id).resources.cpu_shares == 512


async def test_while_a_container_is_built_its_row_is_on_disk_as_creating_and_hidden(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, db: StateDB
) -> None:
    hold = host.hold("build")
    create = asyncio.create_task(manager.create(POD, config(image_id)))
    await hold.reached.wait()

    [row] = rows_on_disk(db)
    assert row.state is ContainerState.CREATING
    assert manager.select() == []

    hold.release()
    assert (await create).id == row.id


async def test_created_then_running_then_exited_with_the_events_of_each(
    manager: ContainerManager, image_id: str, events: list[ContainerEvent]
) -> None:
    started = await running(manager, image_id)
    assert started.state is ContainerState.RUNNING
    assert started.started_at_ns > 0

    manager.on_exit(started.id, 3)

    exited = manager.status(started.id)
    assert (exited.state, exited.exit_code, exited.reason) == (ContainerState.EXITED, 3, "Error")
    assert exited.finished_at_ns >= started.started_at_ns
    assert await kinds_of(events, 3) == [
        (EventKind.CREATED, started.id),
        (EventKind.STARTED, started.id),
        (EventKind.STOPPED, started.id),
    ]


async def test_an_exit_in_a_cgroup_the_oom_killer_hit_is_oom_killed(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    host.oom_killed.add(started.id)

    manager.on_exit(started.id, 9)

    exited = manager.status(started.id)
    assert (exited.exit_code, exited.reason) == (137, "OOMKilled")


async def test_a_second_start_is_refused_without_host_work(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)

    with pytest.raises(FailedPrecondition, match="is running, not created"):
        await manager.start(started.id)
    assert host.steps(started.id).count("start") == 1


async def test_a_container_of_a_stopped_pod_is_neither_created_nor_started(
    manager: ContainerManager, host: FakeContainerHost, sandboxes: SandboxStore, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))
    sandboxes.update(POD, lambda s: replace(s, state=SandboxState.NOTREADY))

    with pytest.raises(FailedPrecondition, match="not ready"):
        await manager.start(created.id)
    with pytest.raises(FailedPrecondition, match="not ready"):
        await manager.create(POD, config(image_id, "other"))
    assert [step for step, _ in host.calls] == ["build"]


async def test_a_start_the_runtime_refuses_ends_the_container_as_cannot_run(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))
    host.fail("start", OciRuntimeError("start", 1, "exec: no such file"))

    with pytest.raises(ContainerRuntimeFailed, match="no such file"):
        await manager.start(created.id)

    ended = manager.status(created.id)
    assert (ended.state, ended.exit_code, ended.reason) == (
        ContainerState.EXITED,
        128,
        "ContainerCannotRun",
    )


async def test_a_start_the_runtime_complains_about_after_conmon_saw_the_exit_is_a_start(
    manager: ContainerManager, host: FakeContainerHost, settings: RuntimeSettings, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))
    host.fail("start", OciRuntimeError("start", 1, "container not running"))
    settings.layout.exits_dir.mkdir(parents=True)
    settings.layout.exit_file(created.id).write_text("0")

    await manager.start(created.id)

    assert manager.status(created.id).state is ContainerState.RUNNING


# --- stop and remove ------------------------------------------------------------------------


async def test_a_stop_sends_the_stop_signal_and_returns_once_the_exit_is_seen(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)

    await manager.stop(started.id, timeout_s=30)

    assert host.kills == [(started.id, signal.SIGQUIT, False)]
    assert manager.status(started.id).state is ContainerState.EXITED


async def test_a_stop_signal_ignored_past_the_timeout_is_followed_by_sigkill_to_all(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    host.ignores_stop_signal = True

    await manager.stop(started.id, timeout_s=0.01)

    assert host.kills == [
        (started.id, signal.SIGQUIT, False),
        (started.id, signal.SIGKILL, True),
    ]
    assert manager.status(started.id).exit_code == 128 + signal.SIGKILL


async def test_a_container_that_does_not_exit_after_sigkill_fails_the_stop(
    manager: ContainerManager,
    host: FakeContainerHost,
    image_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = await running(manager, image_id)
    host.on_exit = lambda _id, _code: None
    monkeypatch.setattr("runtime.containers.manager.KILL_WAIT_S", 0.01)

    with pytest.raises(ContainerRuntimeFailed, match="did not exit after SIGKILL"):
        await manager.stop(started.id, timeout_s=0)
    assert manager.status(started.id).state is ContainerState.RUNNING


async def test_stopping_a_created_container_does_nothing(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))

    await manager.stop(created.id, timeout_s=10)

    assert host.kills == []
    assert manager.status(created.id).state is ContainerState.CREATED


async def test_stop_and_remove_of_unknown_or_removed_containers_succeed(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, db: StateDB
) -> None:
    await manager.stop("f" * 64, timeout_s=10)
    await manager.remove("f" * 64)
    assert host.calls == []

    created = await manager.create(POD, config(image_id))
    await manager.remove(created.id)
    await manager.remove(created.id)
    await manager.stop(created.id, timeout_s=10)

    # Never started, so never in the runtime: nothing there to delete.
    assert host.steps(created.id) == ["build", "remove_files"]
    assert rows_on_disk(db) == []


async def test_a_remove_answers_before_the_clean_up_which_a_restart_would_finish(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, db: StateDB
) -> None:
    started = await running(manager, image_id)
    hold = host.hold("remove_files")

    await manager.remove(started.id)

    await hold.reached.wait()
    with pytest.raises(NotFound):
        manager.status(started.id)
    assert manager.select() == []
    [row] = rows_on_disk(db)
    assert (row.id, row.removing) == (started.id, True)
    # The name is free at once: the kubelet's next attempt may reuse it.
    again = await manager.create(POD, config(image_id))

    hold.release()
    await manager.drain()
    assert [c.id for c in rows_on_disk(db)] == [again.id]


async def test_removing_a_pods_containers_waits_for_their_clean_up(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, db: StateDB
) -> None:
    started = await running(manager, image_id)
    hold = host.hold("remove_files")
    remove_all = asyncio.create_task(manager.remove_all(POD))
    await hold.reached.wait()
    assert not remove_all.done()

    hold.release()
    await remove_all
    assert host.steps(started.id)[-1] == "remove_files"
    assert rows_on_disk(db) == []


async def test_removing_a_running_container_kills_deletes_and_forgets_it(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, events: list[ContainerEvent]
) -> None:
    started = await running(manager, image_id)

    await manager.remove(started.id)

    assert host.steps(started.id)[4:] == ["kill", "delete", "remove_files"]
    assert host.kills == [(started.id, signal.SIGKILL, True)]
    with pytest.raises(NotFound):
        manager.status(started.id)
    await kinds_of(events, 4)
    assert events[-1].kind is EventKind.DELETED
    assert events[-1].container.state is ContainerState.EXITED


async def test_a_runtime_that_cannot_delete_does_not_keep_the_row(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, db: StateDB
) -> None:
    created = await manager.create(POD, config(image_id))
    host.fail("delete", OciRuntimeError("delete", 1, "device busy"))

    await manager.remove(created.id)

    assert host.steps(created.id)[-1] == "remove_files"
    assert rows_on_disk(db) == []


# --- undo of a failed create ----------------------------------------------------------------


async def test_a_failed_build_removes_the_files_then_drops_the_row(
    manager: ContainerManager,
    host: FakeContainerHost,
    image_id: str,
    db: StateDB,
    events: list[ContainerEvent],
) -> None:
    host.fail("build", InvalidArgument("config.mounts[0]: no such host path"))

    with pytest.raises(InvalidArgument, match="no such host path"):
        await manager.create(POD, config(image_id))

    assert [step for step, _ in host.calls] == ["build", "remove_files"]
    assert rows_on_disk(db) == []
    retried = await manager.create(POD, config(image_id))
    assert retried.state is ContainerState.CREATED
    # The bus keeps order: had the failed create published anything, it would come first.
    assert await kinds_of(events, 1) == [(EventKind.CREATED, retried.id)]


async def test_a_start_whose_undo_delete_fails_still_ends_the_container(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))
    host.fail("create", ContainerCreateError("runtime died"))
    host.fail("delete", OciRuntimeError("delete", 1, "state dir is busy"))

    with pytest.raises(ContainerRuntimeFailed, match="runtime died"):
        await manager.start(created.id)

    assert host.steps(created.id) == ["build", "create", "delete"]
    assert manager.status(created.id).state is ContainerState.EXITED


async def test_a_missing_image_is_not_found_before_any_host_work(
    manager: ContainerManager, host: FakeContainerHost, db: StateDB
) -> None:
    with pytest.raises(NotFound, match="pull it first"):
        await manager.create(POD, config("sha256:" + "e" * 64))
    assert host.calls == []
    assert rows_on_disk(db) == []


# --- cancellation ---------------------------------------------------------------------------


async def test_a_caller_cancelled_during_the_build_leaves_a_whole_created_container(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, db: StateDB
) -> None:
    hold = host.hold("build")
    create = asyncio.create_task(manager.create(POD, config(image_id)))
    await hold.reached.wait()
    create.cancel()
    with pytest.raises(asyncio.CancelledError):
        await create

    hold.release()
    await manager.drain()

    [row] = rows_on_disk(db)
    assert row.state is ContainerState.CREATED
    assert host.steps(row.id) == ["build"]


async def test_a_caller_cancelled_before_a_failing_runtime_create_gets_an_ended_container(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    created = await manager.create(POD, config(image_id))
    hold = host.hold("create")
    host.fail("create", ContainerCreateError("no"))
    start = asyncio.create_task(manager.start(created.id))
    await hold.reached.wait()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start

    hold.release()
    await manager.drain()

    assert host.steps(created.id) == ["build", "create", "delete"]
    assert manager.status(created.id).reason == "ContainerCannotRun"


# --- serialisation --------------------------------------------------------------------------


async def test_a_remove_racing_a_start_waits_for_it_then_stops_the_container(
    manager: ContainerManager, host: FakeContainerHost, image_id: str, events: list[ContainerEvent]
) -> None:
    created = await manager.create(POD, config(image_id))
    hold = host.hold("start")
    start = asyncio.create_task(manager.start(created.id))
    await hold.reached.wait()
    remove = asyncio.create_task(manager.remove(created.id))
    assert await wait_until_async(lambda: manager._locks.users(created.id) == 2)

    hold.release()
    await asyncio.gather(start, remove)

    assert host.steps(created.id)[3:] == ["start", "kill", "delete", "remove_files"]
    assert [kind for kind, _ in await kinds_of(events, 4)] == [
        EventKind.CREATED,
        EventKind.STARTED,
        EventKind.STOPPED,
        EventKind.DELETED,
    ]


async def test_two_stops_of_one_container_signal_it_once(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    hold = host.hold("kill")
    first = asyncio.create_task(manager.stop(started.id, timeout_s=30))
    await hold.reached.wait()
    second = asyncio.create_task(manager.stop(started.id, timeout_s=30))
    assert await wait_until_async(lambda: manager._locks.users(started.id) == 2)

    hold.release()
    await asyncio.gather(first, second)

    assert host.kills == [(started.id, signal.SIGQUIT, False)]


async def test_a_start_of_one_container_does_not_wait_for_the_start_of_another(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    slow = await manager.create(POD, config(image_id, "slow"))
    quick = await manager.create(POD, config(image_id, "quick"))
    hold = host.hold("start", slow.id)
    slow_start = asyncio.create_task(manager.start(slow.id))
    await hold.reached.wait()

    await asyncio.wait_for(manager.start(quick.id), timeout=5)

    assert manager.status(quick.id).state is ContainerState.RUNNING
    assert manager.status(slow.id).state is ContainerState.CREATED
    hold.release()
    await slow_start


# --- update, log, exec ----------------------------------------------------------------------


async def test_an_update_applies_the_oci_resources_then_records_them(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    resources = Resources(cpu_shares=512, memory_limit_bytes=64 << 20)

    updated = await manager.update_resources(started.id, resources)

    assert updated.resources == resources
    [applied] = host.updates
    assert applied["memory"]["limit"] == 64 << 20
    assert manager.status(started.id).resources == resources


async def test_an_update_the_runtime_refuses_keeps_the_old_resources(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    host.fail("update", OciRuntimeError("update", 1, "EBUSY"))

    with pytest.raises(InvalidArgument, match="limits unchanged"):
        await manager.update_resources(started.id, Resources(memory_limit_bytes=1 << 20))

    assert manager.status(started.id).resources == Resources()


async def test_an_exited_container_has_nothing_to_update_log_or_exec(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    manager.on_exit(started.id, 0)

    with pytest.raises(FailedPrecondition):
        await manager.update_resources(started.id, Resources(cpu_shares=2))
    with pytest.raises(FailedPrecondition):
        await manager.reopen_log(started.id)
    with pytest.raises(FailedPrecondition):
        await manager.exec_sync(started.id, ["true"], timeout_s=1)
    assert host.steps(started.id) == ["build", "create", "created", "start"]


async def test_exec_and_log_failures_of_conmon_are_runtime_failures(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    host.fail("exec_sync", ConmonError("conmon exited"))
    host.fail("reopen_log", ConmonError("conmon is not running"))

    with pytest.raises(ContainerRuntimeFailed, match="conmon exited"):
        await manager.exec_sync(started.id, ["true"], timeout_s=1)
    with pytest.raises(ContainerRuntimeFailed, match="conmon is not running"):
        await manager.reopen_log(started.id)


async def test_an_exec_past_its_deadline_is_deadline_exceeded(
    manager: ContainerManager, host: FakeContainerHost, image_id: str
) -> None:
    started = await running(manager, image_id)
    assert await manager.exec_sync(started.id, ["true"], timeout_s=1) == (0, b"out", b"err")
    host.exec_result = ExecResult(-1, b"", b"", timed_out=True)

    with pytest.raises(DeadlineExceeded, match="timed out after 1 s"):
        await manager.exec_sync(started.id, ["sleep", "9"], timeout_s=1)
