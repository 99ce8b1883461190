"""ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics: the cAdvisor
figures over the CRI, for kubelets that take them from the runtime instead of cAdvisor. All
read the same snapshot and table the Prometheus endpoint serves, so they agree."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

from cri.convert import metrics as convert
from cri.handlers import Context, Handlers
from cri.metrics_wiring import MetricsSnapshot, cgroup_reader
from cri.paging import pages
from cri.proto import api_pb2 as pb


class PodMetricsRpcs(Handlers):
    @functools.cached_property
    def _snapshot(self) -> MetricsSnapshot:
        # One reader per servicer: it probes the hierarchies once and logs a bad file once.
        return MetricsSnapshot(self.runtime, cgroup_reader(self.runtime))

    async def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: Context
    ) -> pb.ListMetricDescriptorsResponse:
        return convert.DESCRIPTORS

    async def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: Context
    ) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=await self._pod_metrics())

    async def StreamPodSandboxMetrics(
        self, request: pb.StreamPodSandboxMetricsRequest, context: Context
    ) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        for page in pages(await self._pod_metrics()):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=page)

    async def _pod_metrics(self) -> list[pb.PodSandboxMetrics]:
        containers, pods = await asyncio.to_thread(self._snapshot)
        sandbox_ids = [s.id for s in self.runtime.sandboxes.select()]
        return convert.pod_metrics_to_proto(sandbox_ids, containers, pods, time.time())
