"""The cAdvisor series (metrics/cadvisor_series.py) for the running containers and pods, as
a Prometheus collector and as plain values for the CRI's ListPodSandboxMetrics.

Where cAdvisor's exposition and prometheus-client's differ:
- `container_memory_failcnt` is a counter in cAdvisor without the `_total` suffix; the text
  and OpenMetrics formats of prometheus-client cannot express that, so it goes out untyped
  under cAdvisor's exact name (PromQL's rate() works on untyped series all the same).
- The `device` label is the device node (/dev/sda), as cAdvisor's, resolved through /sys; a
  device sysfs does not know is named /dev/block/MAJ:MIN.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

from metrics.block_devices import block_device_name, whole_disk
from metrics.cadvisor_series import (
    CONTAINER_SERIES,
    COUNTER,
    GAUGE,
    POD_SERIES,
    ContainerView,
    DeviceIO,
    Filesystem,
)
from metrics.model import BlkioDevice, CgroupStats, FilesystemStats, InterfaceStats, ProcessStats
from metrics.text_exposition import FamilyText, LabelText, ValueText

log = structlog.get_logger("moorage.metrics")


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
    processes: ProcessStats = field(default_factory=ProcessStats)
    filesystem: FilesystemStats | None = None
    # The writable layer's size; None until first measured.
    layer_bytes: int | None = None
    sandbox_id: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return (self.container, self.id, self.image, self.name, self.namespace, self.pod)


@dataclass(frozen=True)
class PodSample:
    pod: str
    namespace: str
    id: str  # the pod's cgroup path
    interfaces: list[InterfaceStats] = field(default_factory=list)
    sandbox_id: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return ("", self.id, "", "", self.namespace, self.pod)


Snapshot = Callable[[], tuple[list[ContainerSample], list[PodSample]]]
DeviceName = Callable[[int, int], str]
WholeDisk = Callable[[int, int], tuple[int, int]]


def container_view(
    sample: ContainerSample,
    now_s: float,
    device_name: DeviceName = block_device_name,
    disk_of: WholeDisk = whole_disk,
) -> ContainerView:
    devices = {
        (d.major, d.minor): DeviceIO(device_name(d.major, d.minor), d) for d in sample.stats.blkio
    }
    filesystem = None
    fs = sample.filesystem
    if fs is not None:
        # The I/O series always list the disk under the writable layer: blkio lists a disk
        # only after the first I/O on it, and no I/O there is a true 0.
        disk = disk_of(fs.major, fs.minor)
        if disk not in devices:
            devices[disk] = DeviceIO(device_name(*disk), BlkioDevice(*disk))
        filesystem = Filesystem(
            device_name(fs.major, fs.minor),
            sample.layer_bytes or 0,
            fs.capacity_bytes,
            fs.inodes_total,
            fs.inodes_free,
        )
    return ContainerView(
        stats=sample.stats,
        processes=sample.processes,
        devices=[devices[key] for key in sorted(devices)],
        filesystem=filesystem,
        start_time_s=sample.start_time_s,
        now_s=now_s,
    )


_Family = CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily


def _family(name: str, kind: str, help_text: str, labels: tuple[str, ...]) -> _Family:
    # CounterMetricFamily drops a trailing _total and adds it back to each sample, so the name
    # exposed is exactly the one given.
    if kind == COUNTER and name.endswith("_total"):
        return CounterMetricFamily(name, help_text, labels=labels)
    if kind == GAUGE:
        return GaugeMetricFamily(name, help_text, labels=labels)
    return UnknownMetricFamily(name, help_text, labels=labels)


_SCRAPE_ERROR_HELP = "1 if there was an error while getting container metrics, 0 otherwise"
_SCRAPE_ERROR_TEXT = FamilyText("container_scrape_error", GAUGE, _SCRAPE_ERROR_HELP, ())
_CONTAINER_TEXT = [FamilyText(s.name, s.kind, s.help, s.labels) for s in CONTAINER_SERIES]
_POD_TEXT = [FamilyText(s.name, s.kind, s.help, s.labels) for s in POD_SERIES]


class ContainerCollector(Collector):
    """Reads one snapshot per scrape; the snapshot runs in the scraping thread, not the loop."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        device_name: DeviceName = block_device_name,
        disk_of: WholeDisk = whole_disk,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._device_name = device_name
        self._disk_of = disk_of
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        # Names without samples, so that registering never calls the snapshot.
        return self._families([], [], scrape_failed=None)

    def collect(self) -> Iterator[Metric]:
        containers, pods, scrape_failed = self._take_snapshot()
        for family in self._families(containers, pods, scrape_failed=scrape_failed):
            if family.samples:
                yield family

    def text(self) -> bytes:
        """What generate_latest writes for collect()'s families, without building them."""
        containers, pods, scrape_failed = self._take_snapshot()
        value_text, label_text = ValueText(), LabelText()
        escaped = label_text.__getitem__
        out = [_SCRAPE_ERROR_TEXT.header, _SCRAPE_ERROR_TEXT.line.format(value_text[scrape_failed])]
        now_s = self._clock()
        views = [
            (
                [*map(escaped, sample.labels)],
                container_view(sample, now_s, self._device_name, self._disk_of),
            )
            for sample in containers
        ]
        for series, family in zip(CONTAINER_SERIES, _CONTAINER_TEXT, strict=True):
            line = family.line
            lines = [
                line.format(*labels, *map(escaped, extra), value_text[value])
                for labels, view in views
                for extra, value in series.values(view)
            ]
            if lines:
                out.append(family.header)
                out.extend(lines)
        pod_labels = [([*map(escaped, pod.labels)], pod.interfaces) for pod in pods]
        for pod_series, family in zip(POD_SERIES, _POD_TEXT, strict=True):
            line = family.line
            lines = [
                line.format(
                    *labels, escaped(interface.name), value_text[pod_series.value(interface)]
                )
                for labels, interfaces in pod_labels
                for interface in interfaces
            ]
            if lines:
                out.append(family.header)
                out.extend(lines)
        return "".join(out).encode()

    def _take_snapshot(self) -> tuple[list[ContainerSample], list[PodSample], bool]:
        try:
            containers, pods = self._snapshot()
        except Exception:
            # One broken read must not take the agent's own metrics down with it.
            log.exception("metrics_snapshot_failed")
            return [], [], True
        return containers, pods, False

    def _families(
        self, containers: list[ContainerSample], pods: list[PodSample], scrape_failed: bool | None
    ) -> Iterator[Metric]:
        scrape_error = GaugeMetricFamily("container_scrape_error", _SCRAPE_ERROR_HELP)
        if scrape_failed is not None:
            scrape_error.add_metric([], 1 if scrape_failed else 0)
        yield scrape_error
        now_s = self._clock()
        views = [
            (sample.labels, container_view(sample, now_s, self._device_name, self._disk_of))
            for sample in containers
        ]
        for series in CONTAINER_SERIES:
            family = _family(series.name, series.kind, series.help, series.labels)
            for labels, view in views:
                for extra, value in series.values(view):
                    family.add_metric([*labels, *extra], value)
            yield family
        for pod_series in POD_SERIES:
            family = _family(pod_series.name, pod_series.kind, pod_series.help, pod_series.labels)
            for pod in pods:
                for interface in pod.interfaces:
                    family.add_metric([*pod.labels, interface.name], pod_series.value(interface))
            yield family
