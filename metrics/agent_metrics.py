"""The agent's own figures beside the per-RPC ones: pulls, OOM kills, and how many pods and
containers are in each state."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from metrics.operations import REGISTRY

IMAGE_PULL_BYTES = Counter(
    "moorage_image_pull_bytes",
    "Bytes of image content downloaded by pulls",
    registry=REGISTRY,
)
IMAGE_PULL_DURATION = Histogram(
    "moorage_image_pull_duration_seconds",
    "Time to pull an image, from request to the image being stored",
    # Pulls range from a cached manifest check to many-gigabyte layers.
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
OOM_KILLS = Counter(
    "moorage_oom_kills",
    "Containers that ended because the kernel's OOM killer stopped them",
    registry=REGISTRY,
)


def record_image_pull(size_bytes: int, duration_s: float) -> None:
    IMAGE_PULL_BYTES.inc(size_bytes)
    IMAGE_PULL_DURATION.observe(duration_s)


def record_oom_kill() -> None:
    OOM_KILLS.inc()


StateCounts = Callable[[], Mapping[str, int]]

_PODS = ("moorage_pods", "Pod sandboxes known to the agent, by state")
_CONTAINERS = ("moorage_containers", "Containers known to the agent, by state")


class StateCollector(Collector):
    """`moorage_pods{state}` and `moorage_containers{state}`, counted at scrape time from the
    stores, so the figures cannot drift from the state they describe."""

    def __init__(self, pod_states: StateCounts, container_states: StateCounts) -> None:
        self._pod_states = pod_states
        self._container_states = container_states

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not call into the stores.
        yield self._family(*_PODS, {})
        yield self._family(*_CONTAINERS, {})

    def collect(self) -> Iterator[Metric]:
        yield self._family(*_PODS, self._pod_states())
        yield self._family(*_CONTAINERS, self._container_states())

    @staticmethod
    def _family(name: str, help_text: str, counts: Mapping[str, int]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, help_text, labels=["state"])
        for state, count in sorted(counts.items()):
            family.add_metric([state], count)
        return family
