"""Container RPCs: lifecycle, status, listing, resources, logs, ExecSync and events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri import container_convert as convert
from cri.handlers import Handlers
from runtime.containers.events import SubscriberDropped
from runtime.errors import InvalidArgument, Unavailable


class ContainerRpcs(Handlers):
    async def CreateContainer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config = convert.container_config_from_proto(request)
        container = await self.runtime.containers.create(request.pod_sandbox_id, config)
        return pb.CreateContainerResponse(container_id=container.id)

    async def StartContainer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        container_id = _id(request.container_id)
        await self.runtime.containers.start(container_id)
        started = self.runtime.containers.status(container_id)
        self.runtime.layer_usage.measure_soon(
            started.id, self.runtime.layout.container(started.id).upper
        )
        return pb.StartContainerResponse()

    async def StopContainer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # The kubelet may send a negative grace period: it means "kill now", as 0 does.
        timeout_s = float(max(request.timeout, 0))
        await self.runtime.containers.stop(_id(request.container_id), timeout_s)
        return pb.StopContainerResponse()

    async def RemoveContainer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.runtime.containers.remove(_id(request.container_id))
        return pb.RemoveContainerResponse()

    async def ContainerStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        container = self.runtime.containers.status(_id(request.container_id))
        info = {}
        if request.verbose:
            info["info"] = json.dumps(
                {
                    "pid": container.pid,
                    "conmon_pid": container.conmon_pid,
                    "bundle": container.bundle,
                    "runtime": container.runtime_handler,
                    "sandbox_id": container.sandbox_id,
                },
                sort_keys=True,
            )
        return pb.ContainerStatusResponse(
            status=convert.container_status_to_proto(container), info=info
        )

    async def ListContainers(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        containers = self.runtime.containers.select(convert.container_filter_from_proto(request))
        return pb.ListContainersResponse(
            containers=[convert.container_to_proto(c) for c in containers]
        )

    async def UpdateContainerResources(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        if not request.HasField("linux"):
            raise InvalidArgument("linux resources are missing")
        resources = convert.resources_from_proto(request.linux)
        await self.runtime.containers.update_resources(_id(request.container_id), resources)
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.runtime.containers.reopen_log(_id(request.container_id))
        return pb.ReopenContainerLogResponse()

    async def ExecSync(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.timeout < 0:
            raise InvalidArgument(f"timeout {request.timeout} is negative")
        exit_code, stdout, stderr = await self.runtime.containers.exec_sync(
            _id(request.container_id), list(request.cmd), float(request.timeout)
        )
        return pb.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=exit_code)

    async def GetContainerEvents(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            async for event in self.runtime.containers.events.subscribe():
                yield convert.event_to_proto(event)
        except SubscriberDropped as exc:
            raise Unavailable(f"container events: subscriber dropped, {exc}") from None


def _id(container_id: str) -> str:
    if not container_id:
        raise InvalidArgument("container_id is empty")
    return container_id
