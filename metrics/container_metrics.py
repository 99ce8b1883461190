"""Per-container and per-pod series under the names, help texts, types and labels of kubelet's
embedded cAdvisor (google/cadvisor metrics/prometheus.go plus kubelet's label function), so the
dashboards and alerts people already run (`container_memory_working_set_bytes{container!=""}`,
`rate(container_cpu_usage_seconds_total[5m])`, ...) work unchanged.

Where cAdvisor and our data differ, the choices are:
- A figure the host does not provide (None in the model) is left out, never sent as 0.
- The CFS throttling counters appear only for a container with a CPU quota, as in cAdvisor.
- `container_memory_failcnt` is a counter in cAdvisor without the `_total` suffix; the text and
  OpenMetrics formats of prometheus-client cannot express that, so it goes out untyped under
  cAdvisor's exact name (PromQL's rate() works on untyped series all the same).
- Network counters belong to the pod, whose namespaces we hold without a pause container. With
  containerd, cAdvisor reports them on the sandbox's cgroup with container="" (CRI-O and
  dockershim used "POD"); we follow containerd: container="", image="", name="", id = the pod's
  cgroup path, so `container_network_*{pod="x"}` has one series per interface.
- The `device` label of the block I/O counters is the device node (/dev/sda), as cAdvisor's,
  resolved through /sys; a device sysfs does not know is named /dev/block/MAJ:MIN.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

from metrics.model import BlkioDevice, CgroupStats, InterfaceStats, MemoryStats

log = structlog.get_logger("moorage.metrics")

# kubelet's label set, in its order; cAdvisor's `name` is the runtime's container id.
BASE_LABELS = ("container", "id", "image", "name", "namespace", "pod")


@dataclass(frozen=True)
class ContainerSample:
    container: str  # the CRI container name
    pod: str
    namespace: str
    id: str  # the container's cgroup path, as cAdvisor's id
    image: str
    name: str  # the container id
    stats: CgroupStats
    start_time_s: float


@dataclass(frozen=True)
class PodSample:
    pod: str
    namespace: str
    id: str  # the pod's cgroup path
    interfaces: list[InterfaceStats] = field(default_factory=list)


Snapshot = Callable[[], tuple[list[ContainerSample], list[PodSample]]]

_COUNTER, _GAUGE, _UNTYPED = "counter", "gauge", "untyped"

# cAdvisor's help texts, word for word: some tools compare them.
_HELP = {
    "container_cpu_usage_seconds_total": "Cumulative cpu time consumed in seconds.",
    "container_cpu_user_seconds_total": "Cumulative user cpu time consumed in seconds.",
    "container_cpu_system_seconds_total": "Cumulative system cpu time consumed in seconds.",
    "container_cpu_cfs_periods_total": "Number of elapsed enforcement period intervals.",
    "container_cpu_cfs_throttled_periods_total": "Number of throttled period intervals.",
    "container_cpu_cfs_throttled_seconds_total": (
        "Total time duration the container has been throttled."
    ),
    "container_memory_usage_bytes": (
        "Current memory usage in bytes, including all memory regardless of when it was accessed"
    ),
    "container_memory_working_set_bytes": "Current working set in bytes.",
    "container_memory_rss": "Size of RSS in bytes.",
    "container_memory_cache": "Number of bytes of page cache memory.",
    "container_memory_swap": "Container swap usage in bytes.",
    "container_memory_failcnt": "Number of memory usage hits limits",
    "container_oom_events_total": "Count of out of memory events observed for the container",
    "container_spec_memory_limit_bytes": "Memory limit for the container.",
    "container_spec_cpu_quota": "CPU quota of the container.",
    "container_spec_cpu_period": "CPU period of the container.",
    "container_spec_cpu_shares": "CPU share of the container.",
    "container_processes": "Number of processes running inside the container.",
    "container_start_time_seconds": "Start time of the container since unix epoch in seconds.",
    "container_last_seen": "Last time a container was seen by the exporter",
    "container_scrape_error": (
        "1 if there was an error while getting container metrics, 0 otherwise"
    ),
    "container_fs_reads_bytes_total": "Cumulative count of bytes read",
    "container_fs_writes_bytes_total": "Cumulative count of bytes written",
    "container_network_receive_bytes_total": "Cumulative count of bytes received",
    "container_network_receive_packets_total": "Cumulative count of packets received",
    "container_network_receive_packets_dropped_total": (
        "Cumulative count of packets dropped while receiving"
    ),
    "container_network_receive_errors_total": (
        "Cumulative count of errors encountered while receiving"
    ),
    "container_network_transmit_bytes_total": "Cumulative count of bytes transmitted",
    "container_network_transmit_packets_total": "Cumulative count of packets transmitted",
    "container_network_transmit_packets_dropped_total": (
        "Cumulative count of packets dropped while transmitting"
    ),
    "container_network_transmit_errors_total": (
        "Cumulative count of errors encountered while transmitting"
    ),
}


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9


def _throttling(stats: CgroupStats, figure: float | None) -> float | None:
    # cAdvisor reports CFS figures only under a quota: without one they are all zero and noise.
    return figure if stats.cpu_spec.quota is not None else None


def _memory_limit(memory: MemoryStats) -> float | None:
    if memory.limit_bytes is not None:
        return memory.limit_bytes
    # The model's None means unlimited, which cAdvisor reports as 0; but only where the memory
    # controller answered at all, which a known usage shows.
    return 0 if memory.usage_bytes is not None else None


_ContainerFigure = Callable[[CgroupStats], float | None]
_CPU_TOTAL = (("cpu", "total"),)

# name, type, figure, constant extra labels
_CONTAINER_SERIES: tuple[tuple[str, str, _ContainerFigure, tuple[tuple[str, str], ...]], ...] = (
    ("container_cpu_usage_seconds_total", _COUNTER, lambda s: _seconds(s.cpu.usage_ns), _CPU_TOTAL),
    ("container_cpu_user_seconds_total", _COUNTER, lambda s: _seconds(s.cpu.user_ns), ()),
    ("container_cpu_system_seconds_total", _COUNTER, lambda s: _seconds(s.cpu.system_ns), ()),
    (
        "container_cpu_cfs_periods_total",
        _COUNTER,
        lambda s: _throttling(s, s.cpu.periods),
        (),
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        _COUNTER,
        lambda s: _throttling(s, s.cpu.throttled_periods),
        (),
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        _COUNTER,
        lambda s: _throttling(s, _seconds(s.cpu.throttled_ns)),
        (),
    ),
    ("container_memory_usage_bytes", _GAUGE, lambda s: s.memory.usage_bytes, ()),
    ("container_memory_working_set_bytes", _GAUGE, lambda s: s.memory.working_set_bytes, ()),
    ("container_memory_rss", _GAUGE, lambda s: s.memory.rss_bytes, ()),
    ("container_memory_cache", _GAUGE, lambda s: s.memory.cache_bytes, ()),
    ("container_memory_swap", _GAUGE, lambda s: s.memory.swap_bytes, ()),
    ("container_memory_failcnt", _UNTYPED, lambda s: s.memory.failcnt, ()),
    # cAdvisor counts the OOM kills it saw in the kernel log, which is what oom_kill counts.
    ("container_oom_events_total", _COUNTER, lambda s: s.memory.oom_kills, ()),
    ("container_spec_memory_limit_bytes", _GAUGE, lambda s: _memory_limit(s.memory), ()),
    ("container_spec_cpu_quota", _GAUGE, lambda s: s.cpu_spec.quota, ()),
    ("container_spec_cpu_period", _GAUGE, lambda s: s.cpu_spec.period, ()),
    ("container_spec_cpu_shares", _GAUGE, lambda s: s.cpu_spec.shares, ()),
    ("container_processes", _GAUGE, lambda s: s.pids.current, ()),
)

_BLKIO_SERIES: tuple[tuple[str, Callable[[BlkioDevice], int]], ...] = (
    ("container_fs_reads_bytes_total", lambda d: d.read_bytes),
    ("container_fs_writes_bytes_total", lambda d: d.write_bytes),
)

_NETWORK_SERIES: tuple[tuple[str, Callable[[InterfaceStats], int]], ...] = (
    ("container_network_receive_bytes_total", lambda i: i.rx_bytes),
    ("container_network_receive_packets_total", lambda i: i.rx_packets),
    ("container_network_receive_packets_dropped_total", lambda i: i.rx_dropped),
    ("container_network_receive_errors_total", lambda i: i.rx_errors),
    ("container_network_transmit_bytes_total", lambda i: i.tx_bytes),
    ("container_network_transmit_packets_total", lambda i: i.tx_packets),
    ("container_network_transmit_packets_dropped_total", lambda i: i.tx_dropped),
    ("container_network_transmit_errors_total", lambda i: i.tx_errors),
)

_Family = CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily


def _family(name: str, kind: str, labels: tuple[str, ...]) -> _Family:
    # CounterMetricFamily drops a trailing _total and adds it back to each sample, so the name
    # exposed is exactly the one given.
    if kind == _COUNTER:
        return CounterMetricFamily(name, _HELP[name], labels=labels)
    if kind == _GAUGE:
        return GaugeMetricFamily(name, _HELP[name], labels=labels)
    return UnknownMetricFamily(name, _HELP[name], labels=labels)


@functools.lru_cache(maxsize=256)
def block_device_name(major: int, minor: int) -> str:
    """The device node cAdvisor would name, e.g. /dev/sda, from sysfs."""
    try:
        uevent = Path(f"/sys/dev/block/{major}:{minor}/uevent").read_text()
    except OSError:
        return f"/dev/block/{major}:{minor}"
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return f"/dev/{value}"
    return f"/dev/block/{major}:{minor}"


class ContainerCollector(Collector):
    """Reads one snapshot per scrape; the snapshot runs in the scraping thread, not the loop."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        device_name: Callable[[int, int], str] = block_device_name,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._device_name = device_name
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        # Names without samples, so that registering never calls the snapshot.
        return self._families([], [], scrape_failed=None)

    def collect(self) -> Iterator[Metric]:
        try:
            containers, pods = self._snapshot()
            scrape_failed = False
        except Exception:
            # One broken read must not take the agent's own metrics down with it.
            log.exception("metrics_snapshot_failed")
            containers, pods, scrape_failed = [], [], True
        for family in self._families(containers, pods, scrape_failed=scrape_failed):
            if family.samples:
                yield family

    def _families(
        self, containers: list[ContainerSample], pods: list[PodSample], scrape_failed: bool | None
    ) -> Iterator[Metric]:
        scrape_error = GaugeMetricFamily("container_scrape_error", _HELP["container_scrape_error"])
        if scrape_failed is not None:
            scrape_error.add_metric([], 1 if scrape_failed else 0)
        yield scrape_error
        for name, kind, figure, extra_labels in _CONTAINER_SERIES:
            family = _family(name, kind, BASE_LABELS + tuple(key for key, _ in extra_labels))
            for sample in containers:
                value = figure(sample.stats)
                if value is not None:
                    extra_values = [label_value for _, label_value in extra_labels]
                    family.add_metric([*_labels(sample), *extra_values], value)
            yield family
        start_time = _family("container_start_time_seconds", _GAUGE, BASE_LABELS)
        last_seen = _family("container_last_seen", _GAUGE, BASE_LABELS)
        now_s = int(self._clock())  # cAdvisor reports whole seconds here
        for sample in containers:
            start_time.add_metric(_labels(sample), sample.start_time_s)
            last_seen.add_metric(_labels(sample), now_s)
        yield start_time
        yield last_seen
        for name, blkio_figure in _BLKIO_SERIES:
            family = _family(name, _COUNTER, (*BASE_LABELS, "device"))
            for sample in containers:
                for device in sample.stats.blkio:
                    device_name = self._device_name(device.major, device.minor)
                    family.add_metric([*_labels(sample), device_name], blkio_figure(device))
            yield family
        for name, interface_figure in _NETWORK_SERIES:
            family = _family(name, _COUNTER, (*BASE_LABELS, "interface"))
            for pod in pods:
                pod_labels = ["", pod.id, "", "", pod.namespace, pod.pod]
                for interface in pod.interfaces:
                    family.add_metric([*pod_labels, interface.name], interface_figure(interface))
            yield family


def _labels(sample: ContainerSample) -> list[str]:
    return [sample.container, sample.id, sample.image, sample.name, sample.namespace, sample.pod]
