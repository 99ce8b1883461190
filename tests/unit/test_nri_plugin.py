"""One connected NRI plugin, the runtime's side, facing the scriptable test plugin over a
socketpair: registration, configuration, synchronization (split when large), subscriptions,
and the ways a plugin fails."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence

import pytest

from runtime.nri.plugin import (
    ALL_EVENTS,
    NRI_VERSION,
    ConnectedPlugin,
    PluginFailed,
    PluginIdentity,
    PluginReturnedError,
    PluginTimedOut,
    RefuseRegistration,
    event_mask,
)
from runtime.nri.proto import api_pb2
from tests.nri_plugin import PluginBehaviour, StubPlugin

REQUEST_TIMEOUT_S = 0.2
POD = api_pb2.PodSandbox(id="pod-1", name="web", namespace="default", uid="uid-1")
CONTAINER = api_pb2.Container(id="ctr-1", pod_sandbox_id="pod-1", name="app")


async def no_updates(
    plugin: PluginIdentity,
    updates: Sequence[api_pb2.ContainerUpdate],
    evictions: Sequence[api_pb2.ContainerEviction],
) -> Sequence[api_pb2.ContainerUpdate]:
    return []


@contextlib.asynccontextmanager
async def connected(
    behaviour: PluginBehaviour,
    *,
    refuse: RefuseRegistration | None = None,
    launched_as: PluginIdentity | None = None,
) -> AsyncIterator[tuple[ConnectedPlugin, StubPlugin]]:
    ours, theirs = socket.socketpair()
    plugin = ConnectedPlugin(
        *await asyncio.open_unix_connection(sock=ours),
        request_timeout_s=REQUEST_TIMEOUT_S,
        update_containers=no_updates,
        refuse=refuse,
        launched_as=launched_as,
    )
    stub = StubPlugin(behaviour)
    try:
        async with asyncio.timeout(10):
            stub_running = asyncio.create_task(
                stub.run_on(*await asyncio.open_unix_connection(sock=theirs))
            )
            yield plugin, stub
            await asyncio.gather(stub_running, return_exceptions=True)
    finally:
        await plugin.close()
        await stub.close()


async def register(plugin: ConnectedPlugin, config: str = "", timeout_s: float = 1.0) -> None:
    await plugin.register(
        runtime_name="moorage",
        runtime_version="0.1.0",
        config=config,
        registration_timeout_s=timeout_s,
    )


async def test_registration_configures_the_plugin_with_its_config_and_our_timeouts() -> None:
    events = event_mask(api_pb2.CREATE_CONTAINER, api_pb2.STOP_CONTAINER)
    async with connected(PluginBehaviour(name="logger", index="05", events=events)) as (
        plugin,
        stub,
    ):
        await register(plugin, config="verbose: true")

        assert plugin.identity == PluginIdentity("05", "logger")
        assert str(plugin) == "05-logger"
        assert plugin.events == events
        assert plugin.subscribed(api_pb2.CREATE_CONTAINER)
        assert not plugin.subscribed(api_pb2.RUN_POD_SANDBOX)
        [configure] = stub.received("Configure")
        assert configure == api_pb2.ConfigureRequest(
            config="verbose: true",
            runtime_name="moorage",
            runtime_version="0.1.0",
            registration_timeout=1000,
            request_timeout=200,
            NRI_version=NRI_VERSION,
        )


async def test_a_plugin_naming_no_events_is_subscribed_to_all() -> None:
    async with connected(PluginBehaviour(events=0)) as (plugin, _):
        await register(plugin)
        assert plugin.events == ALL_EVENTS


async def test_a_plugin_subscribing_to_unknown_events_is_refused() -> None:
    async with connected(PluginBehaviour(events=1 << 20)) as (plugin, _):
        with pytest.raises(PluginFailed, match="unknown events"):
            await register(plugin)
        assert not plugin.alive


@pytest.mark.parametrize(("index", "name"), [("1", "x"), ("1a", "x"), ("10", ""), ("10", "a/b")])
async def test_an_invalid_index_or_name_is_refused(index: str, name: str) -> None:
    async with connected(PluginBehaviour(index=index, name=name)) as (plugin, _):
        with pytest.raises(PluginFailed, match="invalid NRI plugin"):
            await register(plugin)
        assert not plugin.alive


async def test_a_plugin_that_does_not_register_in_time_is_dropped() -> None:
    async with connected(PluginBehaviour(register=False)) as (plugin, stub):
        with pytest.raises(PluginTimedOut, match="RegisterPlugin"):
            await register(plugin, timeout_s=0.1)
        await stub.wait_closed()
        assert not plugin.alive


async def test_a_refused_registration_is_dropped_with_the_reason() -> None:
    async with connected(PluginBehaviour(), refuse=lambda identity: "taken") as (plugin, _):
        with pytest.raises(PluginFailed, match="taken"):
            await register(plugin)
        assert not plugin.alive


async def test_a_launched_plugin_is_who_its_file_name_says() -> None:
    launched = PluginIdentity("20", "from-file")
    async with connected(PluginBehaviour(name="claimed"), launched_as=launched) as (plugin, _):
        await register(plugin)
        assert plugin.identity == launched


async def test_synchronize_sends_pods_and_containers_and_returns_the_updates() -> None:
    update = api_pb2.ContainerUpdate(container_id="ctr-1")
    async with connected(PluginBehaviour(sync_updates=[update])) as (plugin, stub):
        await register(plugin)
        updates = await plugin.synchronize([POD], [CONTAINER])

        assert updates == [update]
        assert stub.received("Synchronize") == [
            api_pb2.SynchronizeRequest(pods=[POD], containers=[CONTAINER])
        ]


async def test_a_large_synchronize_is_split_with_more() -> None:
    pods = [api_pb2.PodSandbox(id=f"pod-{i}", name="x" * 100) for i in range(5)]
    containers = [api_pb2.Container(id=f"ctr-{i}", name="y" * 100) for i in range(5)]
    async with connected(PluginBehaviour()) as (plugin, stub):
        await register(plugin)
        await plugin.synchronize(pods, containers, chunk_bytes=300)

        requests = [
            r for r in stub.received("Synchronize") if isinstance(r, api_pb2.SynchronizeRequest)
        ]
        assert len(requests) > 2
        assert [r.more for r in requests] == [True] * (len(requests) - 1) + [False]
        assert [p for r in requests for p in r.pods] == pods
        assert [c for r in requests for c in r.containers] == containers


async def test_events_go_only_to_subscribers() -> None:
    adjust = api_pb2.ContainerAdjustment(env=[api_pb2.KeyValue(key="A", value="1")])
    behaviour = PluginBehaviour(events=event_mask(api_pb2.CREATE_CONTAINER), adjustment=adjust)
    async with connected(behaviour) as (plugin, stub):
        await register(plugin)
        await plugin.synchronize([], [])

        await plugin.run_pod_sandbox(POD)
        reply = await plugin.create_container(POD, CONTAINER)
        assert await plugin.stop_container(POD, CONTAINER) is None

        assert reply == api_pb2.CreateContainerResponse(adjust=adjust)
        assert stub.methods() == ["Configure", "Synchronize", "CreateContainer"]


async def test_a_hung_plugin_times_out_and_is_dropped() -> None:
    async with connected(PluginBehaviour(hang_on=frozenset({"CreateContainer"}))) as (
        plugin,
        _,
    ):
        await register(plugin)
        with pytest.raises(PluginTimedOut, match="CreateContainer"):
            await plugin.create_container(POD, CONTAINER)
        assert not plugin.alive
        with pytest.raises(PluginFailed, match="disconnected"):
            await plugin.run_pod_sandbox(POD)


@pytest.mark.parametrize(
    "behaviour",
    [
        PluginBehaviour(crash_on=frozenset({"StartContainer"})),
        PluginBehaviour(garbage_on=frozenset({"StartContainer"})),
    ],
    ids=["crash", "garbage"],
)
async def test_a_crashing_or_garbage_sending_plugin_is_dropped(behaviour: PluginBehaviour) -> None:
    async with connected(behaviour) as (plugin, _):
        await register(plugin)
        with pytest.raises(PluginFailed) as failure:
            await plugin.start_container(POD, CONTAINER)
        assert failure.value.disconnected
        await plugin.wait_closed()
        assert not plugin.alive


async def test_an_error_answer_fails_the_call_and_keeps_the_plugin() -> None:
    async with connected(PluginBehaviour()) as (plugin, _):
        await register(plugin)
        request = api_pb2.ValidateContainerAdjustmentRequest(pod=POD, container=CONTAINER)
        assert await plugin.validate_container_adjustment(request) == (
            api_pb2.ValidateContainerAdjustmentResponse()
        )
        # A method the plugin does not serve: an error answer, not a broken plugin.
        with pytest.raises(PluginReturnedError, match="UNIMPLEMENTED"):
            await plugin._call("NoSuchMethod", api_pb2.Empty(), api_pb2.Empty)
        assert plugin.alive


async def test_close_shuts_the_plugin_down() -> None:
    async with connected(PluginBehaviour()) as (plugin, stub):
        await register(plugin)
        await plugin.close()
        await stub.wait_closed()
        assert stub.methods()[-1] == "Shutdown"
        assert not plugin.alive
