"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox."""

from __future__ import annotations

import time
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri.convert import sandboxes as convert
from cri.convert.filters import sandbox_filter_from_proto
from cri.convert.info import verbose_info
from cri.handlers import Handlers


class PodSandboxRpcs(Handlers):
    async def RunPodSandbox(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config = convert.sandbox_config_from_proto(request)
        sandbox = await self.runtime.sandboxes.run(config)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox.id)

    async def StopPodSandbox(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.runtime.stop_sandbox(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.runtime.remove_sandbox(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        sandbox = self.runtime.sandboxes.status(request.pod_sandbox_id)
        info = verbose_info(sandbox.verbose_info()) if request.verbose else {}
        return pb.PodSandboxStatusResponse(
            status=convert.sandbox_status_to_proto(sandbox), info=info, timestamp=time.time_ns()
        )

    async def ListPodSandbox(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        sandboxes = self.runtime.sandboxes.select(sandbox_filter_from_proto(request))
        return pb.ListPodSandboxResponse(items=[convert.sandbox_to_proto(s) for s in sandboxes])
