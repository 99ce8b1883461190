"""ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats and their Stream
forms."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from cri.convert.containers import container_id
from cri.convert.filters import container_stats_filter_from_proto, pod_stats_filter_from_proto
from cri.convert.stats import container_stats_to_proto, pod_stats_to_proto
from cri.handlers import Context, Handlers
from cri.metrics_wiring import cgroup_reader
from cri.paging import pages
from cri.proto import api_pb2 as pb
from cri.stats_source import ContainerFigures, PodFigures, StatsSource
from runtime.containers.model import ContainerFilter


class StatsRpcs(Handlers):
    @functools.cached_property
    def stats(self) -> StatsSource:
        # One per servicer: it keeps the previous CPU reading of each cgroup for the rates.
        return StatsSource(self.runtime, cgroup_reader(self.runtime))

    @property
    def _writable_root(self) -> str:
        return str(self.runtime.layout.containers_dir)

    async def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: Context
    ) -> pb.ContainerStatsResponse:
        container = self.runtime.containers.status(container_id(request))
        figures = await asyncio.to_thread(self.stats.container, container)
        return pb.ContainerStatsResponse(
            stats=container_stats_to_proto(figures, self._writable_root)
        )

    async def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: Context
    ) -> pb.ListContainerStatsResponse:
        return pb.ListContainerStatsResponse(stats=await self._container_stats(request))

    async def StreamContainerStats(
        self, request: pb.StreamContainerStatsRequest, context: Context
    ) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        for page in pages(await self._container_stats(request)):
            yield pb.StreamContainerStatsResponse(container_stats=page)

    async def _container_stats(
        self, request: pb.ListContainerStatsRequest | pb.StreamContainerStatsRequest
    ) -> list[pb.ContainerStats]:
        f = request.filter
        containers = self.runtime.containers.select(container_stats_filter_from_proto(request))

        def read_all() -> list[ContainerFigures]:
            return [self.stats.container(c) for c in containers]

        figures = await asyncio.to_thread(read_all)
        if not f.id and not f.pod_sandbox_id and not f.label_selector:
            self.stats.forget({c.id for c in containers} | self._pod_keys())
        return [container_stats_to_proto(x, self._writable_root) for x in figures]

    async def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: Context
    ) -> pb.PodSandboxStatsResponse:
        sandbox = self.runtime.sandboxes.status(request.pod_sandbox_id)
        containers = self.runtime.containers.select(ContainerFilter(sandbox_id_prefix=sandbox.id))
        figures = await asyncio.to_thread(self.stats.pod, sandbox, containers)
        return pb.PodSandboxStatsResponse(stats=pod_stats_to_proto(figures, self._writable_root))

    async def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: Context
    ) -> pb.ListPodSandboxStatsResponse:
        return pb.ListPodSandboxStatsResponse(stats=await self._pod_stats(request))

    async def StreamPodSandboxStats(
        self, request: pb.StreamPodSandboxStatsRequest, context: Context
    ) -> AsyncIterator[pb.StreamPodSandboxStatsResponse]:
        for page in pages(await self._pod_stats(request)):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=page)

    async def _pod_stats(
        self, request: pb.ListPodSandboxStatsRequest | pb.StreamPodSandboxStatsRequest
    ) -> list[pb.PodSandboxStats]:
        sandboxes = self.runtime.sandboxes.select(pod_stats_filter_from_proto(request))
        containers = self.runtime.containers.select()

        def read_all() -> list[PodFigures]:
            return [
                self.stats.pod(s, [c for c in containers if c.sandbox_id == s.id])
                for s in sandboxes
            ]

        figures = await asyncio.to_thread(read_all)
        return [pod_stats_to_proto(x, self._writable_root) for x in figures]

    def _pod_keys(self) -> set[str]:
        return {f"pod:{s.id}" for s in self.runtime.sandboxes.select()}
