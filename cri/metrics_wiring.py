"""The Prometheus side of the agent: what a scrape sees, and the figures that come from events.

A scrape runs in the endpoint's own thread. It takes the rows as they are at that moment
(`all()` copies them in one step, safe against the event loop changing the stores) and reads
every running container's cgroup once, and each pod's interfaces from its namespace.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import structlog

from metrics.agent_metrics import StateCollector, record_oom_kill
from metrics.cgroup_reader import CgroupReader
from metrics.container_metrics import ContainerCollector, ContainerSample, PodSample
from metrics.endpoint import MetricsEndpoint, start_endpoint
from metrics.filesystem_reader import read_filesystem
from metrics.model import ProcessStats
from metrics.net_reader import read_interfaces
from metrics.operations import REGISTRY
from runtime.agent import Runtime
from runtime.containers.bundle import container_cgroup_path
from runtime.containers.events import EventKind, SubscriberDropped
from runtime.containers.model import ContainerState
from runtime.pods.model import SandboxState

log = structlog.get_logger("moorage.metrics")


class MetricsSnapshot:
    def __init__(self, runtime: Runtime, reader: CgroupReader) -> None:
        self.runtime = runtime
        self.reader = reader

    def __call__(self) -> tuple[list[ContainerSample], list[PodSample]]:
        sandboxes = {s.id: s for s in self.runtime.sandboxes.all()}
        filesystem = read_filesystem(str(self.runtime.layout.containers_dir))
        containers: list[ContainerSample] = []
        for container in self.runtime.containers.all():
            sandbox = sandboxes.get(container.sandbox_id)
            if sandbox is None or container.state is not ContainerState.RUNNING:
                continue
            path = container_cgroup_path(sandbox.cgroup_path, container.id)
            stats = self.reader.read(path)
            if stats is None:
                continue
            processes = self.reader.read_processes(path, container.pid)
            layer = self.runtime.layer_usage.get(container.id)
            md = sandbox.config.metadata
            containers.append(
                ContainerSample(
                    container=container.config.name,
                    pod=md.name,
                    namespace=md.namespace,
                    id=path,
                    image=container.config.image,
                    name=container.id,
                    stats=stats,
                    start_time_s=container.started_at_ns / 1e9,
                    processes=processes or ProcessStats(),
                    filesystem=filesystem,
                    layer_bytes=layer.used_bytes if layer else None,
                    sandbox_id=sandbox.id,
                )
            )
        pods: list[PodSample] = []
        for sandbox in sandboxes.values():
            if sandbox.state is not SandboxState.READY or not sandbox.netns_path:
                continue
            interfaces = read_interfaces(sandbox.netns_path)
            if interfaces is None:
                continue
            md = sandbox.config.metadata
            pods.append(
                PodSample(md.name, md.namespace, sandbox.cgroup_path, interfaces, sandbox.id)
            )
        return containers, pods


def cgroup_reader(runtime: Runtime) -> CgroupReader:
    return CgroupReader.of(runtime.cgroups.v1_roots, runtime.cgroups.unified_root)


class AgentMetrics:
    """The collectors in the agent's registry, the endpoint serving it, and the event
    listener that counts OOM kills."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Served by the endpoint apart from the registry: it writes its own text, faster.
        self._containers = ContainerCollector(MetricsSnapshot(runtime, cgroup_reader(runtime)))
        self._collectors = [StateCollector(self._pod_states, self._container_states)]
        self._endpoint: MetricsEndpoint | None = None
        self._listener: asyncio.Task[None] | None = None

    def start(self, address: str) -> None:
        for collector in self._collectors:
            REGISTRY.register(collector)
        self._listener = asyncio.get_running_loop().create_task(self._count_oom_kills())
        if address:
            self._endpoint = start_endpoint(address, REGISTRY, [self._containers])
            log.info("metrics endpoint", address=f"{self._endpoint.host}:{self._endpoint.port}")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._endpoint is not None:
            await asyncio.to_thread(self._endpoint.close)
        for collector in self._collectors:
            REGISTRY.unregister(collector)

    async def _count_oom_kills(self) -> None:
        while True:
            try:
                async for event in self.runtime.containers.events.subscribe():
                    if event.kind is EventKind.STOPPED and event.container.reason == "OOMKilled":
                        record_oom_kill()
            except SubscriberDropped:
                log.warning("OOM kill counting fell behind the events; some may be missed")

    def _pod_states(self) -> Counter[str]:
        return Counter(s.state.value for s in self.runtime.sandboxes.all())

    def _container_states(self) -> Counter[str]:
        return Counter(c.state.value for c in self.runtime.containers.all())
