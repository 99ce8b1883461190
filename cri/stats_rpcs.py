"""ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri.convert.containers import container_id
from cri.convert.filters import container_stats_filter_from_proto, pod_stats_filter_from_proto
from cri.convert.stats import container_stats_to_proto, pod_stats_to_proto
from cri.handlers import Handlers
from cri.metrics_wiring import cgroup_reader
from cri.stats_source import StatsSource
from runtime.containers.model import ContainerFilter


class StatsRpcs(Handlers):
    @functools.cached_property
    def stats(self) -> StatsSource:
        # One per servicer: it keeps the previous CPU reading of each cgroup for the rates.
        return StatsSource(self.runtime, cgroup_reader(self.runtime))

    @property
    def _writable_root(self) -> str:
        return str(self.runtime.layout.containers_dir)

    async def ContainerStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        container = self.runtime.containers.status(container_id(request))
        figures = await asyncio.to_thread(self.stats.container, container)
        return pb.ContainerStatsResponse(
            stats=container_stats_to_proto(figures, self._writable_root)
        )

    async def ListContainerStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        f = request.filter
        containers = self.runtime.containers.select(container_stats_filter_from_proto(request))

        def read_all() -> list[Any]:
            return [self.stats.container(c) for c in containers]

        figures = await asyncio.to_thread(read_all)
        if not f.id and not f.pod_sandbox_id and not f.label_selector:
            self.stats.forget({c.id for c in containers} | self._pod_keys())
        return pb.ListContainerStatsResponse(
            stats=[container_stats_to_proto(x, self._writable_root) for x in figures]
        )

    async def PodSandboxStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        sandbox = self.runtime.sandboxes.status(request.pod_sandbox_id)
        containers = self.runtime.containers.select(ContainerFilter(sandbox_id_prefix=sandbox.id))
        figures = await asyncio.to_thread(self.stats.pod, sandbox, containers)
        return pb.PodSandboxStatsResponse(stats=pod_stats_to_proto(figures, self._writable_root))

    async def ListPodSandboxStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        sandboxes = self.runtime.sandboxes.select(pod_stats_filter_from_proto(request))
        containers = self.runtime.containers.select()

        def read_all() -> list[Any]:
            return [
                self.stats.pod(s, [c for c in containers if c.sandbox_id == s.id])
                for s in sandboxes
            ]

        figures = await asyncio.to_thread(read_all)
        return pb.ListPodSandboxStatsResponse(
            stats=[pod_stats_to_proto(x, self._writable_root) for x in figures]
        )

    def _pod_keys(self) -> set[str]:
        return {f"pod:{s.id}" for s in self.runtime.sandboxes.select()}
