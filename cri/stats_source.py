"""Fresh figures for the CRI stats RPCs: each container's and pod's cgroup read at call time,
the pod's interfaces read from its network namespace, writable layers from the background
measurement. Blocking; the RPCs run it in a worker thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from metrics.cgroup_reader import CgroupReader
from metrics.model import CgroupStats, InterfaceStats
from metrics.net_reader import read_interfaces
from runtime.agent import Runtime
from runtime.containers.bundle import container_cgroup_path
from runtime.containers.layer_usage import LayerUsage
from runtime.containers.model import Container
from runtime.pods.model import Sandbox


@dataclass(frozen=True)
class ContainerFigures:
    container: Container
    timestamp_ns: int
    stats: CgroupStats | None
    # CPU cores used since the previous read of this container, in billionths.
    nano_cores: int | None
    layer: LayerUsage | None


@dataclass(frozen=True)
class PodFigures:
    sandbox: Sandbox
    timestamp_ns: int
    stats: CgroupStats | None
    nano_cores: int | None
    interfaces: list[InterfaceStats]
    containers: list[ContainerFigures]


class StatsSource:
    def __init__(self, runtime: Runtime, reader: CgroupReader) -> None:
        self.runtime = runtime
        self.reader = reader
        # Previous (time, cpu usage) per cgroup, for the usage rate CRI reports.
        self._last_cpu: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def container(self, container: Container) -> ContainerFigures:
        sandbox = self.runtime.sandboxes.find(container.sandbox_id)
        stats = None
        if sandbox is not None:
            path = container_cgroup_path(sandbox.cgroup_path, container.id)
            stats = self.reader.read(path, brief=True)
        now = time.time_ns()
        return ContainerFigures(
            container=container,
            timestamp_ns=now,
            stats=stats,
            nano_cores=self._rate(container.id, now, stats),
            layer=self.runtime.layer_usage.get(container.id),
        )

    def pod(self, sandbox: Sandbox, containers: list[Container]) -> PodFigures:
        stats = self.reader.read(sandbox.cgroup_path, brief=True)
        now = time.time_ns()
        interfaces: list[InterfaceStats] = []
        if sandbox.netns_path:
            interfaces = read_interfaces(sandbox.netns_path) or []
        return PodFigures(
            sandbox=sandbox,
            timestamp_ns=now,
            stats=stats,
            nano_cores=self._rate(f"pod:{sandbox.id}", now, stats),
            interfaces=interfaces,
            containers=[self.container(c) for c in containers],
        )

    def _rate(self, key: str, now: int, stats: CgroupStats | None) -> int | None:
        usage = stats.cpu.usage_ns if stats else None
        if usage is None:
            return None
        with self._lock:
            previous = self._last_cpu.get(key)
            self._last_cpu[key] = (now, usage)
        if previous is None or now <= previous[0] or usage < previous[1]:
            return None
        return (usage - previous[1]) * 1_000_000_000 // (now - previous[0])

    def forget(self, live_keys: set[str]) -> None:
        """Drop the rate baselines of containers and pods that are gone."""
        with self._lock:
            for key in set(self._last_cpu) - live_keys:
                del self._last_cpu[key]
