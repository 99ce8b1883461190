"""Every per-container and per-pod series kubelet's /metrics/cadvisor exposes, under
cAdvisor's names, help texts (word for word: some tools compare them), types and labels
(google/cadvisor metrics/prometheus.go plus kubelet's label function).

The table is the one source of truth: the Prometheus collector, ListMetricDescriptors and
ListPodSandboxMetrics all read it, so the three never disagree on a name or a label, and the
descriptors exist before the first container does.

Each container series has at least one value for every running container. A figure the host
does not provide (None in the model) goes out as 0, the value cAdvisor itself reports for
what it cannot read; the README lists which figures those are and why. Limits follow
cAdvisor's conventions: an unlimited memory, reservation, swap or thread limit and an absent
CPU quota are 0, an unlimited open-files limit is -1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from metrics.model import BlkioDevice, CgroupStats, InterfaceStats, ProcessStats

# kubelet's label set, in its order; cAdvisor's `name` is the runtime's container id.
BASE_LABELS = ("container", "id", "image", "name", "namespace", "pod")

COUNTER, GAUGE = "counter", "gauge"


@dataclass(frozen=True)
class DeviceIO:
    """One disk's I/O by the container, the disk named as cAdvisor names it."""

    name: str
    io: BlkioDevice


@dataclass(frozen=True)
class Filesystem:
    """The filesystem holding the container's writable layer, and the layer's use of it."""

    device: str
    usage_bytes: int
    capacity_bytes: int
    inodes_total: int
    inodes_free: int


@dataclass(frozen=True)
class ContainerView:
    """One container's figures as the series read them."""

    stats: CgroupStats
    processes: ProcessStats
    # Every disk the container did I/O on, and always the one its writable layer is on.
    devices: list[DeviceIO]
    filesystem: Filesystem | None
    start_time_s: float
    now_s: float


Values = Iterator[tuple[tuple[str, ...], float]]


@dataclass(frozen=True)
class Series:
    name: str
    kind: str
    help: str
    values: Callable[[ContainerView], Values]
    extra_labels: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra_labels


@dataclass(frozen=True)
class PodSeries:
    """A series of the pod's network namespace, one value per interface."""

    name: str
    help: str
    value: Callable[[InterfaceStats], int]
    kind: str = COUNTER
    extra_labels: tuple[str, ...] = ("interface",)

    @property
    def labels(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra_labels


def _n(value: float | None) -> float:
    return 0.0 if value is None else float(value)


def _seconds(ns: int | None) -> float:
    return 0.0 if ns is None else ns / 1e9


def _one(figure: Callable[[ContainerView], float | None]) -> Callable[[ContainerView], Values]:
    def values(view: ContainerView) -> Values:
        yield (), _n(figure(view))

    return values


def _per_device(figure: Callable[[DeviceIO], float]) -> Callable[[ContainerView], Values]:
    def values(view: ContainerView) -> Values:
        for device in view.devices:
            yield (device.name,), figure(device)

    return values


def _per_filesystem(figure: Callable[[Filesystem], int]) -> Callable[[ContainerView], Values]:
    def values(view: ContainerView) -> Values:
        if view.filesystem is not None:
            yield (view.filesystem.device,), float(figure(view.filesystem))

    return values


def _no_cgroup_figure(view: ContainerView) -> Values:
    # Merges, sectors, service and queue times per cgroup came from CFQ's blkio files, gone
    # since Linux 5.0; neither v1's throttle files nor v2's io.stat have them.
    for device in view.devices:
        yield (device.name,), 0.0


def _blkio_usage(view: ContainerView) -> Values:
    for device in view.devices:
        numbers = (device.name, str(device.io.major), str(device.io.minor))
        yield (*numbers, "Read"), float(device.io.read_bytes)
        yield (*numbers, "Write"), float(device.io.write_bytes)


def _cpu_usage(view: ContainerView) -> Values:
    yield ("total",), _seconds(view.stats.cpu.usage_ns)


def _memory_failures(view: ContainerView) -> Values:
    memory = view.stats.memory
    yield ("pgfault", "container"), _n(memory.local_page_faults)
    yield ("pgmajfault", "container"), _n(memory.local_major_page_faults)
    yield ("pgfault", "hierarchy"), _n(memory.page_faults)
    yield ("pgmajfault", "hierarchy"), _n(memory.major_page_faults)


# /proc/TID/stat's letters under cAdvisor's names; it counts I/O waits apart, which /proc
# does not, so iowaiting stays 0.
_TASK_STATES = (
    ("sleeping", ("S", "I")),
    ("running", ("R",)),
    ("stopped", ("T", "t")),
    ("uninterruptible", ("D",)),
    ("iowaiting", ()),
)


def _tasks_state(view: ContainerView) -> Values:
    states = view.processes.task_states
    for name, letters in _TASK_STATES:
        yield (name,), float(sum(states.get(letter, 0) for letter in letters))


def _open_files_limit(view: ContainerView) -> Values:
    yield ("max_open_files",), _n(view.processes.max_open_files)


CONTAINER_SERIES: tuple[Series, ...] = (
    Series(
        "container_blkio_device_usage_total",
        COUNTER,
        "Blkio Device bytes usage",
        _blkio_usage,
        ("device", "major", "minor", "operation"),
    ),
    Series(
        "container_cpu_cfs_periods_total",
        COUNTER,
        "Number of elapsed enforcement period intervals.",
        _one(lambda v: v.stats.cpu.periods),
    ),
    Series(
        "container_cpu_cfs_throttled_periods_total",
        COUNTER,
        "Number of throttled period intervals.",
        _one(lambda v: v.stats.cpu.throttled_periods),
    ),
    Series(
        "container_cpu_cfs_throttled_seconds_total",
        COUNTER,
        "Total time duration the container has been throttled.",
        _one(lambda v: _seconds(v.stats.cpu.throttled_ns)),
    ),
    # cAdvisor's load average needs its netlink sampler, which kubelet runs without: 0 there too.
    Series(
        "container_cpu_load_average_10s",
        GAUGE,
        "Value of container cpu load average over the last 10 seconds.",
        _one(lambda v: None),
    ),
    Series(
        "container_cpu_system_seconds_total",
        COUNTER,
        "Cumulative system cpu time consumed in seconds.",
        _one(lambda v: _seconds(v.stats.cpu.system_ns)),
    ),
    Series(
        "container_cpu_usage_seconds_total",
        COUNTER,
        "Cumulative cpu time consumed in seconds.",
        _cpu_usage,
        ("cpu",),
    ),
    Series(
        "container_cpu_user_seconds_total",
        COUNTER,
        "Cumulative user cpu time consumed in seconds.",
        _one(lambda v: _seconds(v.stats.cpu.user_ns)),
    ),
    Series(
        "container_file_descriptors",
        GAUGE,
        "Number of open file descriptors for the container.",
        _one(lambda v: v.processes.file_descriptors),
    ),
    Series(
        "container_fs_inodes_free",
        GAUGE,
        "Number of available Inodes",
        _per_filesystem(lambda f: f.inodes_free),
        ("device",),
    ),
    Series(
        "container_fs_inodes_total",
        GAUGE,
        "Number of Inodes",
        _per_filesystem(lambda f: f.inodes_total),
        ("device",),
    ),
    Series(
        "container_fs_io_current",
        GAUGE,
        "Number of I/Os currently in progress",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_io_time_seconds_total",
        COUNTER,
        "Cumulative count of seconds spent doing I/Os",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_io_time_weighted_seconds_total",
        COUNTER,
        "Cumulative weighted I/O time in seconds",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_limit_bytes",
        GAUGE,
        "Number of bytes that can be consumed by the container on this filesystem.",
        _per_filesystem(lambda f: f.capacity_bytes),
        ("device",),
    ),
    Series(
        "container_fs_read_seconds_total",
        COUNTER,
        "Cumulative count of seconds spent reading",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_reads_bytes_total",
        COUNTER,
        "Cumulative count of bytes read",
        _per_device(lambda d: d.io.read_bytes),
        ("device",),
    ),
    Series(
        "container_fs_reads_merged_total",
        COUNTER,
        "Cumulative count of reads merged",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_reads_total",
        COUNTER,
        "Cumulative count of reads completed",
        _per_device(lambda d: d.io.read_ops),
        ("device",),
    ),
    Series(
        "container_fs_sector_reads_total",
        COUNTER,
        "Cumulative count of sector reads completed",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_sector_writes_total",
        COUNTER,
        "Cumulative count of sector writes completed",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_usage_bytes",
        GAUGE,
        "Number of bytes that are consumed by the container on this filesystem.",
        _per_filesystem(lambda f: f.usage_bytes),
        ("device",),
    ),
    Series(
        "container_fs_write_seconds_total",
        COUNTER,
        "Cumulative count of seconds spent writing",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_writes_bytes_total",
        COUNTER,
        "Cumulative count of bytes written",
        _per_device(lambda d: d.io.write_bytes),
        ("device",),
    ),
    Series(
        "container_fs_writes_merged_total",
        COUNTER,
        "Cumulative count of writes merged",
        _no_cgroup_figure,
        ("device",),
    ),
    Series(
        "container_fs_writes_total",
        COUNTER,
        "Cumulative count of writes completed",
        _per_device(lambda d: d.io.write_ops),
        ("device",),
    ),
    # cAdvisor reports whole seconds here.
    Series(
        "container_last_seen",
        GAUGE,
        "Last time a container was seen by the exporter",
        _one(lambda v: int(v.now_s)),
    ),
    Series(
        "container_memory_cache",
        GAUGE,
        "Number of bytes of page cache memory.",
        _one(lambda v: v.stats.memory.cache_bytes),
    ),
    # A counter without the _total suffix in cAdvisor; see the collector for its exposition.
    Series(
        "container_memory_failcnt",
        COUNTER,
        "Number of memory usage hits limits",
        _one(lambda v: v.stats.memory.failcnt),
    ),
    Series(
        "container_memory_failures_total",
        COUNTER,
        "Cumulative count of memory allocation failures.",
        _memory_failures,
        ("failure_type", "scope"),
    ),
    Series(
        "container_memory_kernel_usage",
        GAUGE,
        "Size of kernel memory allocated in bytes.",
        _one(lambda v: v.stats.memory.kernel_bytes),
    ),
    Series(
        "container_memory_mapped_file",
        GAUGE,
        "Size of memory mapped files in bytes.",
        _one(lambda v: v.stats.memory.mapped_file_bytes),
    ),
    Series(
        "container_memory_max_usage_bytes",
        GAUGE,
        "Maximum memory usage recorded in bytes",
        _one(lambda v: v.stats.memory.max_usage_bytes),
    ),
    Series(
        "container_memory_rss",
        GAUGE,
        "Size of RSS in bytes.",
        _one(lambda v: v.stats.memory.rss_bytes),
    ),
    Series(
        "container_memory_swap",
        GAUGE,
        "Container swap usage in bytes.",
        _one(lambda v: v.stats.memory.swap_bytes),
    ),
    Series(
        "container_memory_usage_bytes",
        GAUGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        _one(lambda v: v.stats.memory.usage_bytes),
    ),
    Series(
        "container_memory_working_set_bytes",
        GAUGE,
        "Current working set in bytes.",
        _one(lambda v: v.stats.memory.working_set_bytes),
    ),
    # cAdvisor counts the OOM kills it saw in the kernel log, which is what oom_kill counts.
    Series(
        "container_oom_events_total",
        COUNTER,
        "Count of out of memory events observed for the container",
        _one(lambda v: v.stats.memory.oom_kills),
    ),
    Series(
        "container_processes",
        GAUGE,
        "Number of processes running inside the container.",
        _one(lambda v: v.processes.processes),
    ),
    Series(
        "container_sockets",
        GAUGE,
        "Number of open sockets for the container.",
        _one(lambda v: v.processes.sockets),
    ),
    Series(
        "container_spec_cpu_period",
        GAUGE,
        "CPU period of the container.",
        _one(lambda v: v.stats.cpu_spec.period),
    ),
    Series(
        "container_spec_cpu_quota",
        GAUGE,
        "CPU quota of the container.",
        _one(lambda v: v.stats.cpu_spec.quota),
    ),
    Series(
        "container_spec_cpu_shares",
        GAUGE,
        "CPU share of the container.",
        _one(lambda v: v.stats.cpu_spec.shares),
    ),
    Series(
        "container_spec_memory_limit_bytes",
        GAUGE,
        "Memory limit for the container.",
        _one(lambda v: v.stats.memory.limit_bytes),
    ),
    Series(
        "container_spec_memory_reservation_limit_bytes",
        GAUGE,
        "Memory reservation limit for the container.",
        _one(lambda v: v.stats.memory.reservation_bytes),
    ),
    Series(
        "container_spec_memory_swap_limit_bytes",
        GAUGE,
        "Memory swap limit for the container.",
        _one(lambda v: v.stats.memory.swap_limit_bytes),
    ),
    Series(
        "container_start_time_seconds",
        GAUGE,
        "Start time of the container since unix epoch in seconds.",
        _one(lambda v: v.start_time_s),
    ),
    Series(
        "container_tasks_state",
        GAUGE,
        "Number of tasks in given state",
        _tasks_state,
        ("state",),
    ),
    Series(
        "container_threads",
        GAUGE,
        "Number of threads running inside the container",
        _one(lambda v: v.processes.threads),
    ),
    Series(
        "container_threads_max",
        GAUGE,
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        _one(lambda v: v.stats.pids.limit),
    ),
    Series(
        "container_ulimits_soft",
        GAUGE,
        "Soft ulimit values for the container root process. Unlimited if -1, except priority "
        "and nice",
        _open_files_limit,
        ("ulimit",),
    ),
)

# Network counters belong to the pod, whose namespaces we hold without a pause container.
# With containerd, cAdvisor reports them on the sandbox's cgroup with container="" (CRI-O
# and dockershim used "POD"); we follow containerd.
POD_SERIES: tuple[PodSeries, ...] = (
    PodSeries(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        lambda i: i.rx_bytes,
    ),
    PodSeries(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        lambda i: i.rx_errors,
    ),
    PodSeries(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        lambda i: i.rx_dropped,
    ),
    PodSeries(
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        lambda i: i.rx_packets,
    ),
    PodSeries(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        lambda i: i.tx_bytes,
    ),
    PodSeries(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        lambda i: i.tx_errors,
    ),
    PodSeries(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        lambda i: i.tx_dropped,
    ),
    PodSeries(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        lambda i: i.tx_packets,
    ),
)
