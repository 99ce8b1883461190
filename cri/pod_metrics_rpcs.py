"""ListMetricDescriptors and ListPodSandboxMetrics: the cAdvisor figures over the CRI, for
kubelets that take them from the runtime instead of cAdvisor. Both read the same snapshot and
table the Prometheus endpoint serves, so the two agree."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri.convert import metrics as convert
from cri.handlers import Handlers
from cri.metrics_wiring import MetricsSnapshot, cgroup_reader


class PodMetricsRpcs(Handlers):
    @functools.cached_property
    def _snapshot(self) -> MetricsSnapshot:
        # One reader per servicer: it probes the hierarchies once and logs a bad file once.
        return MetricsSnapshot(self.runtime, cgroup_reader(self.runtime))

    async def ListMetricDescriptors(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return convert.DESCRIPTORS

    async def ListPodSandboxMetrics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        containers, pods = await asyncio.to_thread(self._snapshot)
        sandbox_ids = [s.id for s in self.runtime.sandboxes.select()]
        return pb.ListPodSandboxMetricsResponse(
            pod_metrics=convert.pod_metrics_to_proto(sandbox_ids, containers, pods, time.time())
        )
