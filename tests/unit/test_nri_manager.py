"""The NRI manager listening on a unix socket in tmp_path, with test plugins connecting (or
launched from a plugin directory): registration, synchronization, fan-out in index order, and
plugins that hang, crash, send garbage, reconnect or ask for updates on their own."""

from __future__ import annotations

import contextlib
import json
import stat
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime.nri.manager import NriManager, ValidationRejection
from runtime.nri.plugin import PluginIdentity, PluginTimedOut, event_mask
from runtime.nri.proto import api_pb2
from runtime.nri.settings import NriSettings, OnPluginTimeout
from runtime.nri.ttrpc import TtrpcError
from tests.nri_plugin import PluginBehaviour, StubPlugin
from tests.waiting import wait_until_async

POD = api_pb2.PodSandbox(id="pod-1", name="web", namespace="default", uid="uid-1")
CONTAINER = api_pb2.Container(id="ctr-1", pod_sandbox_id="pod-1", name="app")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Owner:
    """The runtime's side of the callbacks: what exists, and the updates plugins ask for."""

    pods: list[api_pb2.PodSandbox] = field(default_factory=lambda: [POD])
    containers: list[api_pb2.Container] = field(default_factory=lambda: [CONTAINER])
    updates: list[tuple[PluginIdentity, list[api_pb2.ContainerUpdate]]] = field(
        default_factory=list
    )

    async def synchronize(
        self,
    ) -> tuple[Sequence[api_pb2.PodSandbox], Sequence[api_pb2.Container]]:
        return self.pods, self.containers

    async def update_containers(
        self,
        plugin: PluginIdentity,
        updates: Sequence[api_pb2.ContainerUpdate],
        evictions: Sequence[api_pb2.ContainerEviction],
    ) -> Sequence[api_pb2.ContainerUpdate]:
        self.updates.append((plugin, list(updates)))
        return [u for u in updates if u.container_id == "unknown"]


def nri_settings(tmp_path: Path, **overrides: object) -> NriSettings:
    values: dict[str, object] = {
        "enable": True,
        "socket_path": tmp_path / "nri" / "nri.sock",
        "plugin_path": tmp_path / "plugins",
        "plugin_config_path": tmp_path / "conf.d",
        "registration_timeout_s": 2.0,
        "request_timeout_s": 0.2,
    }
    return NriSettings(**{**values, **overrides})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(settings: NriSettings, owner: Owner) -> AsyncIterator[NriManager]:
    manager = NriManager(
        settings,
        runtime_name="moorage",
        runtime_version="0.1.0",
        synchronize=owner.synchronize,
        update_containers=owner.update_containers,
    )
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close()


@contextlib.asynccontextmanager
async def plugins(
    manager: NriManager, settings: NriSettings, *behaviours: PluginBehaviour
) -> AsyncIterator[list[StubPlugin]]:
    """Test plugins connected to the manager, each registered and synchronized."""
    stubs = [StubPlugin(b) for b in behaviours]
    try:
        for stub in stubs:
            await stub.connect(settings.socket_path)
            assert await wait_until_async(stub.synchronized.is_set)
        assert await wait_until_async(lambda: len(manager.plugins) >= len(stubs))
        yield stubs
    finally:
        for stub in stubs:
            await stub.close()


def names(manager: NriManager) -> list[str]:
    return [str(p) for p in manager.plugins]


async def test_a_plugin_registers_is_configured_and_synchronized(tmp_path: Path) -> None:
    settings, owner = nri_settings(tmp_path), Owner()
    async with (
        running(settings, owner) as manager,
        plugins(manager, settings, PluginBehaviour(name="logger", index="10")) as [stub],
    ):
        assert names(manager) == ["10-logger"]
        [configure] = stub.received("Configure")
        assert isinstance(configure, api_pb2.ConfigureRequest)
        assert (configure.runtime_name, configure.request_timeout) == ("moorage", 200)
        assert stub.received("Synchronize") == [
            api_pb2.SynchronizeRequest(pods=[POD], containers=[CONTAINER])
        ]


async def test_closing_the_manager_shuts_plugins_down(tmp_path: Path) -> None:
    settings, stub = nri_settings(tmp_path), StubPlugin()
    async with running(settings, Owner()) as manager:
        await stub.connect(settings.socket_path)
        assert await wait_until_async(lambda: names(manager) == ["10-test"])
    await stub.wait_closed()
    assert stub.methods()[-1] == "Shutdown"


async def test_the_socket_is_private_and_a_stale_one_replaced(tmp_path: Path) -> None:
    settings = nri_settings(tmp_path)
    settings.socket_path.parent.mkdir()
    settings.socket_path.write_text("stale")
    async with running(settings, Owner()):
        mode = settings.socket_path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    assert not settings.socket_path.exists()


async def test_without_connections_nothing_listens(tmp_path: Path) -> None:
    settings = nri_settings(tmp_path, disable_connections=True)
    async with running(settings, Owner()):
        assert not settings.socket_path.exists()


async def test_events_go_to_subscribers_in_index_order(tmp_path: Path) -> None:
    settings = nri_settings(tmp_path)
    adjust_b = api_pb2.ContainerAdjustment(env=[api_pb2.KeyValue(key="B", value="2")])
    adjust_a = api_pb2.ContainerAdjustment(env=[api_pb2.KeyValue(key="A", value="1")])
    async with (
        running(settings, Owner()) as manager,
        plugins(
            manager,
            settings,
            PluginBehaviour(name="b", index="20", adjustment=adjust_b),
            PluginBehaviour(name="a", index="10", adjustment=adjust_a),
            PluginBehaviour(name="runs", index="15", events=event_mask(api_pb2.RUN_POD_SANDBOX)),
        ) as [b, a, runs],
    ):
        replies = await manager.create_container(POD, CONTAINER)
        await manager.run_pod_sandbox(POD)

        assert names(manager) == ["10-a", "15-runs", "20-b"]
        assert replies == [
            ("10-a", api_pb2.CreateContainerResponse(adjust=adjust_a)),
            ("20-b", api_pb2.CreateContainerResponse(adjust=adjust_b)),
        ]
        assert runs.methods() == ["Configure", "Synchronize", "RunPodSandbox"]
        assert a.methods()[-2:] == b.methods()[-2:] == ["CreateContainer", "RunPodSandbox"]


async def test_a_second_registration_with_the_same_identity_is_refused(tmp_path: Path) -> None:
    settings = nri_settings(tmp_path)
    async with (
        running(settings, Owner()) as manager,
        plugins(manager, settings, PluginBehaviour(name="one", index="10")),
    ):
        duplicate = StubPlugin(PluginBehaviour(name="one", index="10"))
        with pytest.raises(TtrpcError, match="already registered"):
            await duplicate.connect(settings.socket_path)
        await duplicate.wait_closed()
        assert names(manager) == ["10-one"]


@pytest.mark.parametrize(
    "misbehaving",
    [
        PluginBehaviour(name="hangs", hang_on=frozenset({"CreateContainer"})),
        PluginBehaviour(name="crashes", crash_on=frozenset({"CreateContainer"})),
        PluginBehaviour(name="garbles", garbage_on=frozenset({"CreateContainer"})),
    ],
    ids=["hang", "crash", "garbage"],
)
async def test_a_failing_plugin_is_dropped_and_the_others_still_served(
    tmp_path: Path, misbehaving: PluginBehaviour
) -> None:
    settings = nri_settings(tmp_path)
    async with (
        running(settings, Owner()) as manager,
        plugins(manager, settings, misbehaving, PluginBehaviour(name="good", index="20")),
    ):
        replies = await manager.create_container(POD, CONTAINER)

        assert [name for name, _ in replies] == ["20-good"]
        assert names(manager) == ["20-good"]
        assert [name for name, _ in await manager.create_container(POD, CONTAINER)] == ["20-good"]


async def test_with_fail_a_timeout_fails_the_call_naming_the_plugin(tmp_path: Path) -> None:
    settings = nri_settings(tmp_path, on_plugin_timeout=OnPluginTimeout.FAIL)
    hangs = PluginBehaviour(name="hangs", index="10", hang_on=frozenset({"StopContainer"}))
    async with (
        running(settings, Owner()) as manager,
        plugins(manager, settings, hangs, PluginBehaviour(name="good", index="20")) as [_, good],
    ):
        with pytest.raises(PluginTimedOut, match="10-hangs"):
            await manager.stop_container(POD, CONTAINER)
        assert names(manager) == ["20-good"]
        assert "StopContainer" not in good.methods()


async def test_a_plugin_can_reconnect_and_register_again(tmp_path: Path) -> None:
    settings = nri_settings(tmp_path)
    behaviour = PluginBehaviour(name="comes-back", index="10")
    async with running(settings, Owner()) as manager:
        async with plugins(manager, settings, behaviour):
            pass
        assert await wait_until_async(lambda: names(manager) == [])
        async with plugins(manager, settings, behaviour) as [again]:
            assert names(manager) == ["10-comes-back"]
            await manager.start_container(POD, CONTAINER)
            assert again.methods()[-1] == "StartContainer"


async def test_unsolicited_updates_reach_the_owner(tmp_path: Path) -> None:
    settings, owner = nri_settings(tmp_path), Owner()
    updates = [api_pb2.ContainerUpdate(container_id=c) for c in ("ctr-1", "unknown")]
    async with (
        running(settings, owner) as manager,
        plugins(manager, settings, PluginBehaviour(name="tuner", index="10")) as [stub],
    ):
        answer = await stub.update_containers(updates)

        assert owner.updates == [(PluginIdentity("10", "tuner"), updates)]
        assert list(answer.failed) == [updates[1]]


async def test_updates_asked_for_in_synchronize_reach_the_owner(tmp_path: Path) -> None:
    settings, owner = nri_settings(tmp_path), Owner()
    update = api_pb2.ContainerUpdate(container_id="ctr-1")
    async with (
        running(settings, owner) as manager,
        plugins(manager, settings, PluginBehaviour(sync_updates=[update])),
    ):
        assert owner.updates == [(PluginIdentity("10", "test"), [update])]


async def test_the_first_rejecting_validator_in_index_order_is_reported(tmp_path: Path) -> None:
    settings = nri_settings(tmp_path)
    validates = event_mask(api_pb2.VALIDATE_CONTAINER_ADJUSTMENT)
    request = api_pb2.ValidateContainerAdjustmentRequest(pod=POD, container=CONTAINER)
    async with running(settings, Owner()) as manager:
        async with plugins(
            manager,
            settings,
            PluginBehaviour(name="approves", index="10", events=validates),
            PluginBehaviour(name="strict", index="30", events=validates, reject_validation="no"),
            PluginBehaviour(name="picky", index="20", events=validates, reject_validation="hm"),
        ):
            assert await manager.validate_container_adjustment(request) == (
                ValidationRejection("20-picky", "hm")
            )
        assert await wait_until_async(lambda: names(manager) == [])
        assert await manager.validate_container_adjustment(request) is None


def write_preinstalled_plugin(settings: NriSettings, file_name: str, record: Path) -> None:
    settings.plugin_path.mkdir()
    script = settings.plugin_path / file_name
    # Launched with nothing but the NRI variables in its environment, as upstream does.
    script.write_text(
        f"#!/bin/sh\ncd {REPO} && exec {sys.executable} -m tests.nri_plugin --record {record}\n"
    )
    script.chmod(0o755)


async def test_a_preinstalled_plugin_is_launched_configured_and_stopped(tmp_path: Path) -> None:
    settings, record = nri_settings(tmp_path), tmp_path / "record.jsonl"
    write_preinstalled_plugin(settings, "30-preinstalled", record)
    settings.plugin_config_path.mkdir()
    (settings.plugin_config_path / "preinstalled.conf").write_text("level: debug\n")
    (settings.plugin_path / "not-a-plugin").write_text("")  # not executable: ignored

    async with running(settings, Owner()) as manager:
        assert names(manager) == ["30-preinstalled"]
        [process] = manager.processes
        assert not process.exited.done()
        await manager.create_container(POD, CONTAINER)

    assert process.exited.done()
    requests = [json.loads(line) for line in record.read_text().splitlines()]
    methods = [r["method"] for r in requests]
    assert methods == ["Configure", "Synchronize", "CreateContainer", "Shutdown"]
    assert requests[0]["message"]["config"] == "level: debug\n"


async def test_a_preinstalled_plugin_disconnected_exits_is_reaped_and_dropped(
    tmp_path: Path,
) -> None:
    settings, record = nri_settings(tmp_path), tmp_path / "record.jsonl"
    write_preinstalled_plugin(settings, "30-preinstalled", record)
    async with running(settings, Owner()) as manager:
        [process] = manager.processes
        [plugin] = manager.plugins
        await plugin.close()  # the test plugin exits when its connection ends
        assert await wait_until_async(process.exited.done)
        assert await wait_until_async(lambda: names(manager) == [])
        assert process.exited.result() == 0
