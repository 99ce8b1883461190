"""A client that cancels a Stream* call half-way: the server's call ends CANCELLED, and no task
and no generator of it is left behind in the agent's loop."""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import cast

import grpc
import pytest

from cri.config import Config
from cri.interceptor import CallInterceptor
from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from cri.runtime_service import RuntimeService
from metrics.operations import REGISTRY
from runtime.agent import Runtime
from runtime.containers.manager import ContainerManager
from runtime.images.manager import ImageManager
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore, reserved_name
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from tests.unit.builders import container
from tests.unit.fake_hosts import FakeContainerHost
from tests.waiting import wait_until_async

# Far more than the transport buffers: the server is still writing when the client cancels.
ROWS = 5000


@pytest.fixture
def containers(settings: RuntimeSettings, db: StateDB) -> ContainerManager:
    manager = ContainerManager(
        settings,
        ContainerStore(db),
        SandboxStore(db),
        ImageManager(settings, db),
        FakeContainerHost(),
    )
    for i in range(ROWS):
        row = container(f"{i:064x}", name=f"app{i}")
        manager.store.reserve(row, reserved_name(row, "pod"))
    return manager


@pytest.fixture
async def channel(
    containers: ContainerManager, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[grpc.aio.Channel]:
    address = f"unix://{tmp_path_factory.mktemp('s')}/g.sock"
    server = grpc.aio.server(interceptors=[CallInterceptor()])
    # StreamContainers reads the container manager and nothing else of the runtime.
    runtime = cast(Runtime, SimpleNamespace(containers=containers))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeService(runtime, Config()), server)
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as opened:
            yield opened
    finally:
        await server.stop(None)


def _cancelled_calls() -> float:
    labels = {"method": "StreamContainers", "code": "CANCELLED"}
    return REGISTRY.get_sample_value("moorage_cri_errors_total", labels) or 0.0


def _stream_generators() -> list[object]:
    gc.collect()
    return [
        o
        for o in gc.get_objects()
        if inspect.isasyncgen(o) and o.ag_code.co_name in ("StreamContainers", "behavior")
    ]


async def test_a_stream_cancelled_half_way_leaves_no_task_or_generator(
    channel: grpc.aio.Channel,
) -> None:
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
    tasks_before = len(asyncio.all_tasks())
    cancelled_before = _cancelled_calls()

    call = stub.StreamContainers(pb.StreamContainersRequest())
    first = await call.read()
    assert isinstance(first, pb.StreamContainersResponse)
    assert first.containers
    call.cancel()

    # CANCELLED, not OK: the server was still sending when the client went away.
    assert await wait_until_async(lambda: _cancelled_calls() == cancelled_before + 1)
    assert await wait_until_async(lambda: len(asyncio.all_tasks()) <= tasks_before)
    assert _stream_generators() == []
