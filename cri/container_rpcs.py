"""Container RPCs: lifecycle, status, listing, resources, logs, ExecSync and events."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cri.convert import containers as convert
from cri.convert.filters import container_filter_from_proto
from cri.convert.info import verbose_info
from cri.convert.resources import resources_update_from_proto
from cri.handlers import Context, Handlers
from cri.paging import pages
from cri.proto import api_pb2 as pb
from runtime.containers.events import SubscriberDropped
from runtime.errors import Unavailable


class ContainerRpcs(Handlers):
    async def CreateContainer(
        self, request: pb.CreateContainerRequest, context: Context
    ) -> pb.CreateContainerResponse:
        config = convert.container_config_from_proto(request)
        container = await self.runtime.containers.create(request.pod_sandbox_id, config)
        return pb.CreateContainerResponse(container_id=container.id)

    async def StartContainer(
        self, request: pb.StartContainerRequest, context: Context
    ) -> pb.StartContainerResponse:
        await self.runtime.start_container(convert.container_id(request))
        return pb.StartContainerResponse()

    async def StopContainer(
        self, request: pb.StopContainerRequest, context: Context
    ) -> pb.StopContainerResponse:
        timeout_s = convert.stop_timeout_s(request)
        await self.runtime.containers.stop(convert.container_id(request), timeout_s)
        return pb.StopContainerResponse()

    async def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: Context
    ) -> pb.RemoveContainerResponse:
        await self.runtime.containers.remove(convert.container_id(request))
        return pb.RemoveContainerResponse()

    async def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: Context
    ) -> pb.ContainerStatusResponse:
        container = self.runtime.containers.status(convert.container_id(request))
        info = verbose_info(container.verbose_info()) if request.verbose else {}
        return pb.ContainerStatusResponse(
            status=convert.container_status_to_proto(container), info=info
        )

    async def ListContainers(
        self, request: pb.ListContainersRequest, context: Context
    ) -> pb.ListContainersResponse:
        return pb.ListContainersResponse(containers=self._containers(request))

    async def StreamContainers(
        self, request: pb.StreamContainersRequest, context: Context
    ) -> AsyncIterator[pb.StreamContainersResponse]:
        for page in pages(self._containers(request)):
            yield pb.StreamContainersResponse(containers=page)

    def _containers(
        self, request: pb.ListContainersRequest | pb.StreamContainersRequest
    ) -> list[pb.Container]:
        containers = self.runtime.containers.select(container_filter_from_proto(request))
        return [convert.container_to_proto(c) for c in containers]

    async def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: Context
    ) -> pb.UpdateContainerResourcesResponse:
        resources = resources_update_from_proto(request)
        await self.runtime.containers.update_resources(convert.container_id(request), resources)
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: Context
    ) -> pb.ReopenContainerLogResponse:
        await self.runtime.containers.reopen_log(convert.container_id(request))
        return pb.ReopenContainerLogResponse()

    async def ExecSync(self, request: pb.ExecSyncRequest, context: Context) -> pb.ExecSyncResponse:
        timeout_s = convert.exec_sync_timeout_s(request)
        exit_code, stdout, stderr = await self.runtime.containers.exec_sync(
            convert.container_id(request), list(request.cmd), timeout_s
        )
        return pb.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=exit_code)

    async def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: Context
    ) -> AsyncIterator[pb.ContainerEventResponse]:
        try:
            async for event in self.runtime.containers.events.subscribe():
                yield convert.event_to_proto(event)
        except SubscriberDropped as exc:
            raise Unavailable(f"container events: subscriber dropped, {exc}") from None
