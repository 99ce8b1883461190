"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox,
StreamPodSandboxes, UpdatePodSandboxResources."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from cri.convert import sandboxes as convert
from cri.convert.filters import sandbox_filter_from_proto
from cri.convert.info import verbose_info
from cri.convert.resources import pod_resources_from_proto
from cri.handlers import Context, Handlers
from cri.paging import pages
from cri.proto import api_pb2 as pb


class PodSandboxRpcs(Handlers):
    async def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: Context
    ) -> pb.RunPodSandboxResponse:
        config = convert.sandbox_config_from_proto(request)
        sandbox = await self.runtime.sandboxes.run(config)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox.id)

    async def StopPodSandbox(
        self, request: pb.StopPodSandboxRequest, context: Context
    ) -> pb.StopPodSandboxResponse:
        await self.runtime.stop_sandbox(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: Context
    ) -> pb.RemovePodSandboxResponse:
        await self.runtime.remove_sandbox(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: Context
    ) -> pb.PodSandboxStatusResponse:
        sandbox = self.runtime.sandboxes.status(request.pod_sandbox_id)
        info = verbose_info(sandbox.verbose_info()) if request.verbose else {}
        return pb.PodSandboxStatusResponse(
            status=convert.sandbox_status_to_proto(sandbox), info=info, timestamp=time.time_ns()
        )

    async def ListPodSandbox(
        self, request: pb.ListPodSandboxRequest, context: Context
    ) -> pb.ListPodSandboxResponse:
        return pb.ListPodSandboxResponse(items=self._sandboxes(request))

    async def StreamPodSandboxes(
        self, request: pb.StreamPodSandboxesRequest, context: Context
    ) -> AsyncIterator[pb.StreamPodSandboxesResponse]:
        for page in pages(self._sandboxes(request)):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=page)

    def _sandboxes(
        self, request: pb.ListPodSandboxRequest | pb.StreamPodSandboxesRequest
    ) -> list[pb.PodSandbox]:
        sandboxes = self.runtime.sandboxes.select(sandbox_filter_from_proto(request))
        return [convert.sandbox_to_proto(s) for s in sandboxes]

    async def UpdatePodSandboxResources(
        self, request: pb.UpdatePodSandboxResourcesRequest, context: Context
    ) -> pb.UpdatePodSandboxResourcesResponse:
        resources = pod_resources_from_proto(request)
        await self.runtime.sandboxes.update_resources(request.pod_sandbox_id, resources)
        return pb.UpdatePodSandboxResourcesResponse()
