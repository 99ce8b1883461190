"""The cAdvisor-compatible collector and the agent's own figures, rendered as a scrape sees them."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from metrics.agent_metrics import StateCollector, record_image_pull, record_oom_kill
from metrics.block_devices import block_device_name
from metrics.cadvisor_series import CONTAINER_SERIES, POD_SERIES
from metrics.container_metrics import ContainerCollector, ContainerSample, PodSample
from metrics.model import (
    BlkioDevice,
    CgroupStats,
    CpuSpec,
    CpuStats,
    FilesystemStats,
    InterfaceStats,
    MemoryStats,
    PidsStats,
    ProcessStats,
)
from metrics.operations import REGISTRY

NOW_S = 1_700_000_123.75
CID = "c0ffee" * 10 + "abcd"
CGROUP = f"/kubepods/burstable/pod-uid-1/{CID}"
CONTAINER_LABELS = {
    "container": "web",
    "id": CGROUP,
    "image": "docker.io/library/nginx:1.25",
    "name": CID,
    "namespace": "default",
    "pod": "web-0",
}
POD_LABELS = {
    "container": "",
    "id": "/kubepods/burstable/pod-uid-1",
    "image": "",
    "name": "",
    "namespace": "default",
    "pod": "web-0",
}


def line(name: str, labels: dict[str, str], value: str) -> str:
    """One exposition line; labels are sorted, as prometheus-client writes them."""
    rendered = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
    return f"{name}{{{rendered}}} {value}"


FULL_STATS = CgroupStats(
    cpu=CpuStats(
        usage_ns=2_500_000_000,
        user_ns=1_500_000_000,
        system_ns=1_000_000_000,
        periods=40,
        throttled_periods=3,
        throttled_ns=250_000_000,
    ),
    memory=MemoryStats(
        usage_bytes=10_485_760,
        working_set_bytes=8_388_608,
        rss_bytes=4_194_304,
        cache_bytes=2_097_152,
        swap_bytes=0,
        page_faults=900,
        major_page_faults=9,
        local_page_faults=800,
        local_major_page_faults=8,
        kernel_bytes=65_536,
        mapped_file_bytes=131_072,
        max_usage_bytes=12_582_912,
        failcnt=2,
        oom_events=5,
        oom_kills=1,
        limit_bytes=268_435_456,
        reservation_bytes=134_217_728,
        swap_limit_bytes=None,
    ),
    pids=PidsStats(current=7, limit=100),
    blkio=[
        BlkioDevice(major=8, minor=0, read_bytes=4096, write_bytes=8192, read_ops=2, write_ops=3)
    ],
    cpu_spec=CpuSpec(shares=512, quota=50_000, period=100_000),
)
PROCESSES = ProcessStats(
    processes=2,
    threads=7,
    file_descriptors=9,
    sockets=1,
    task_states={"S": 4, "I": 1, "R": 1, "D": 1},
    max_open_files=1024,
)
# The writable layer's filesystem is on partition 8:1 of disk 8:0.
FILESYSTEM = FilesystemStats(
    major=8, minor=1, capacity_bytes=10_737_418_240, inodes_total=1000, inodes_free=600
)


def container(
    stats: CgroupStats = FULL_STATS,
    processes: ProcessStats = PROCESSES,
    filesystem: FilesystemStats | None = FILESYSTEM,
    **changes: str,
) -> ContainerSample:
    fields = {
        "container": "web",
        "pod": "web-0",
        "namespace": "default",
        "id": CGROUP,
        "image": "docker.io/library/nginx:1.25",
        "name": CID,
    } | changes
    return ContainerSample(
        **fields,
        stats=stats,
        start_time_s=1_700_000_000.0,
        processes=processes,
        filesystem=filesystem,
        layer_bytes=40_960,
    )


def pod() -> PodSample:
    return PodSample(
        pod="web-0",
        namespace="default",
        id="/kubepods/burstable/pod-uid-1",
        interfaces=[
            InterfaceStats(
                name="eth0",
                rx_bytes=1000,
                rx_packets=10,
                rx_errors=1,
                rx_dropped=2,
                tx_bytes=2000,
                tx_packets=20,
                tx_errors=3,
                tx_dropped=4,
            )
        ],
    )


def scrape(*collectors: Collector) -> list[str]:
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode().splitlines()


def collector(containers: list[ContainerSample], pods: list[PodSample]) -> ContainerCollector:
    return ContainerCollector(
        lambda: (containers, pods),
        device_name=lambda major, minor: f"/dev/test{major}-{minor}",
        disk_of=lambda major, minor: (major, 0),
        clock=lambda: NOW_S,
    )


def test_every_figure_is_exposed_under_cadvisors_name_and_labels() -> None:
    lines = scrape(collector([container()], [pod()]))

    c = CONTAINER_LABELS
    disk = c | {"device": "/dev/test8-0"}
    partition = c | {"device": "/dev/test8-1"}
    eth0 = POD_LABELS | {"interface": "eth0"}
    blkio = disk | {"major": "8", "minor": "0"}
    expected = [
        line("container_blkio_device_usage_total", blkio | {"operation": "Read"}, "4096.0"),
        line("container_blkio_device_usage_total", blkio | {"operation": "Write"}, "8192.0"),
        line("container_cpu_cfs_periods_total", c, "40.0"),
        line("container_cpu_cfs_throttled_periods_total", c, "3.0"),
        line("container_cpu_cfs_throttled_seconds_total", c, "0.25"),
        line("container_cpu_load_average_10s", c, "0.0"),
        line("container_cpu_system_seconds_total", c, "1.0"),
        line("container_cpu_usage_seconds_total", c | {"cpu": "total"}, "2.5"),
        line("container_cpu_user_seconds_total", c, "1.5"),
        line("container_file_descriptors", c, "9.0"),
        line("container_fs_inodes_free", partition, "600.0"),
        line("container_fs_inodes_total", partition, "1000.0"),
        line("container_fs_io_current", disk, "0.0"),
        line("container_fs_io_time_seconds_total", disk, "0.0"),
        line("container_fs_io_time_weighted_seconds_total", disk, "0.0"),
        line("container_fs_limit_bytes", partition, "1.073741824e+10"),
        line("container_fs_read_seconds_total", disk, "0.0"),
        line("container_fs_reads_bytes_total", disk, "4096.0"),
        line("container_fs_reads_merged_total", disk, "0.0"),
        line("container_fs_reads_total", disk, "2.0"),
        line("container_fs_sector_reads_total", disk, "0.0"),
        line("container_fs_sector_writes_total", disk, "0.0"),
        line("container_fs_usage_bytes", partition, "40960.0"),
        line("container_fs_write_seconds_total", disk, "0.0"),
        line("container_fs_writes_bytes_total", disk, "8192.0"),
        line("container_fs_writes_merged_total", disk, "0.0"),
        line("container_fs_writes_total", disk, "3.0"),
        line("container_last_seen", c, "1.700000123e+09"),
        line("container_memory_cache", c, "2.097152e+06"),
        line("container_memory_failcnt", c, "2.0"),
        line(
            "container_memory_failures_total",
            c | {"failure_type": "pgfault", "scope": "container"},
            "800.0",
        ),
        line(
            "container_memory_failures_total",
            c | {"failure_type": "pgmajfault", "scope": "container"},
            "8.0",
        ),
        line(
            "container_memory_failures_total",
            c | {"failure_type": "pgfault", "scope": "hierarchy"},
            "900.0",
        ),
        line(
            "container_memory_failures_total",
            c | {"failure_type": "pgmajfault", "scope": "hierarchy"},
            "9.0",
        ),
        line("container_memory_kernel_usage", c, "65536.0"),
        line("container_memory_mapped_file", c, "131072.0"),
        line("container_memory_max_usage_bytes", c, "1.2582912e+07"),
        line("container_memory_rss", c, "4.194304e+06"),
        line("container_memory_swap", c, "0.0"),
        line("container_memory_usage_bytes", c, "1.048576e+07"),
        line("container_memory_working_set_bytes", c, "8.388608e+06"),
        line("container_oom_events_total", c, "1.0"),
        line("container_processes", c, "2.0"),
        line("container_sockets", c, "1.0"),
        line("container_spec_cpu_period", c, "100000.0"),
        line("container_spec_cpu_quota", c, "50000.0"),
        line("container_spec_cpu_shares", c, "512.0"),
        line("container_spec_memory_limit_bytes", c, "2.68435456e+08"),
        line("container_spec_memory_reservation_limit_bytes", c, "1.34217728e+08"),
        line("container_spec_memory_swap_limit_bytes", c, "0.0"),
        line("container_start_time_seconds", c, "1.7e+09"),
        line("container_tasks_state", c | {"state": "sleeping"}, "5.0"),
        line("container_tasks_state", c | {"state": "running"}, "1.0"),
        line("container_tasks_state", c | {"state": "stopped"}, "0.0"),
        line("container_tasks_state", c | {"state": "uninterruptible"}, "1.0"),
        line("container_tasks_state", c | {"state": "iowaiting"}, "0.0"),
        line("container_threads", c, "7.0"),
        line("container_threads_max", c, "100.0"),
        line("container_ulimits_soft", c | {"ulimit": "max_open_files"}, "1024.0"),
        line("container_network_receive_bytes_total", eth0, "1000.0"),
        line("container_network_receive_packets_total", eth0, "10.0"),
        line("container_network_receive_errors_total", eth0, "1.0"),
        line("container_network_receive_packets_dropped_total", eth0, "2.0"),
        line("container_network_transmit_bytes_total", eth0, "2000.0"),
        line("container_network_transmit_packets_total", eth0, "20.0"),
        line("container_network_transmit_errors_total", eth0, "3.0"),
        line("container_network_transmit_packets_dropped_total", eth0, "4.0"),
        "container_scrape_error 0.0",
    ]
    missing = [line for line in expected if line not in lines]
    assert not missing, "\n".join(["missing:", *missing, "got:", *lines])


def test_a_scrape_has_every_series_of_the_table_with_its_labels() -> None:
    lines = scrape(collector([container()], [pod()]))

    labels_by_name: dict[str, set[tuple[str, ...]]] = {}
    for text in lines:
        if text.startswith("#"):
            continue
        name, _, rest = text.partition("{")
        keys = tuple(sorted(pair.split("=")[0] for pair in re.findall(r'\w+="[^"]*"', rest)))
        labels_by_name.setdefault(name, set()).add(keys)
    expected = {s.name: s.labels for s in CONTAINER_SERIES} | {s.name: s.labels for s in POD_SERIES}
    for name, labels in expected.items():
        assert labels_by_name.get(name) == {tuple(sorted(labels))}, name


def test_help_and_type_lines_carry_the_exposed_name_without_a_doubled_total() -> None:
    """Regression: CounterMetricFamily adds _total itself, so a name given with it must not end
    up as ..._total_total."""
    lines = scrape(collector([container()], [pod()]))

    assert not [text for text in lines if "_total_total" in text]
    assert "# TYPE container_cpu_usage_seconds_total counter" in lines
    assert (
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds." in lines
    )
    assert "# TYPE container_memory_working_set_bytes gauge" in lines
    assert "# TYPE container_network_receive_bytes_total counter" in lines
    # cAdvisor's counter without _total cannot be a counter here; its name stays exact.
    assert "# TYPE container_memory_failcnt untyped" in lines
    typed = {text.split()[2] for text in lines if text.startswith("# TYPE ")}
    sampled = {re.split(r"[{ ]", text)[0] for text in lines if not text.startswith("#")}
    assert sampled == typed


def test_figures_the_host_does_not_provide_go_out_as_zero_under_every_name() -> None:
    bare = container(CgroupStats(), ProcessStats(), None)

    lines = scrape(collector([bare], []))

    samples = {re.split(r"[{ ]", text)[0]: text for text in lines if not text.startswith("#")}
    # Without a filesystem or any I/O there is no device to label the fs series with.
    per_device = {s.name for s in CONTAINER_SERIES if "device" in s.extra_labels}
    assert set(samples) == {s.name for s in CONTAINER_SERIES} - per_device | {
        "container_scrape_error"
    }
    assert samples["container_memory_working_set_bytes"].endswith(" 0.0")
    assert samples["container_spec_memory_limit_bytes"].endswith(" 0.0")


def test_unlimited_limits_follow_cadvisors_conventions() -> None:
    stats = CgroupStats(
        memory=MemoryStats(usage_bytes=100, limit_bytes=None, reservation_bytes=None),
        pids=PidsStats(current=1, limit=None),
        cpu_spec=CpuSpec(shares=1024, quota=None, period=100_000),
    )
    unlimited_files = ProcessStats(processes=1, threads=1, max_open_files=-1)

    lines = scrape(collector([container(stats, unlimited_files)], []))

    c = CONTAINER_LABELS
    assert line("container_spec_memory_limit_bytes", c, "0.0") in lines
    assert line("container_spec_memory_reservation_limit_bytes", c, "0.0") in lines
    assert line("container_spec_cpu_quota", c, "0.0") in lines
    assert line("container_threads_max", c, "0.0") in lines
    assert line("container_ulimits_soft", c | {"ulimit": "max_open_files"}, "-1.0") in lines


def test_the_writable_layers_disk_is_listed_before_any_io_on_it() -> None:
    no_io = CgroupStats(blkio=[BlkioDevice(major=9, minor=0, read_bytes=512)])

    lines = scrape(collector([container(no_io)], []))

    c = CONTAINER_LABELS
    assert line("container_fs_reads_bytes_total", c | {"device": "/dev/test9-0"}, "512.0") in lines
    assert line("container_fs_reads_bytes_total", c | {"device": "/dev/test8-0"}, "0.0") in lines
    assert line("container_fs_usage_bytes", c | {"device": "/dev/test8-1"}, "40960.0") in lines


def test_each_container_and_pod_gets_its_own_series() -> None:
    other = container(container="sidecar", name="d00d", id=f"{CGROUP}-2")

    lines = scrape(collector([container(), other], [pod()]))

    working_set = [text for text in lines if text.startswith("container_memory_working_set_bytes")]
    assert len(working_set) == 2
    assert any('container="sidecar"' in text and 'name="d00d"' in text for text in working_set)


def test_snapshot_is_taken_once_per_scrape_and_never_at_registration() -> None:
    calls: list[int] = []

    def snapshot() -> tuple[list[ContainerSample], list[PodSample]]:
        calls.append(1)
        return [container()], [pod()]

    registry = CollectorRegistry(auto_describe=True)
    registry.register(ContainerCollector(snapshot))
    assert calls == []

    generate_latest(registry)
    assert calls == [1]


def test_a_failing_snapshot_reports_a_scrape_error_and_spares_other_collectors() -> None:
    def broken() -> tuple[list[ContainerSample], list[PodSample]]:
        raise OSError("cgroup gone")

    lines = scrape(
        ContainerCollector(broken),
        StateCollector(lambda: {"ready": 1}, lambda: {}),
    )

    assert "container_scrape_error 1.0" in lines
    assert 'moorage_pods{state="ready"} 1.0' in lines


def test_a_block_device_sysfs_does_not_know_is_named_by_its_numbers() -> None:
    assert block_device_name(4095, 1048575) == "/dev/block/4095:1048575"


def test_pods_and_containers_are_counted_by_state() -> None:
    lines = scrape(
        StateCollector(
            lambda: {"ready": 2, "notready": 1},
            lambda: {"running": 3, "exited": 1, "created": 0},
        )
    )

    assert "# TYPE moorage_pods gauge" in lines
    assert 'moorage_pods{state="notready"} 1.0' in lines
    assert 'moorage_pods{state="ready"} 2.0' in lines
    assert 'moorage_containers{state="running"} 3.0' in lines
    assert 'moorage_containers{state="created"} 0.0' in lines


def test_pulls_and_oom_kills_are_counted_in_the_agent_registry() -> None:
    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    before = (
        value("moorage_image_pull_bytes_total"),
        value("moorage_image_pull_duration_seconds_count"),
        value("moorage_oom_kills_total"),
    )

    record_image_pull(1234, 2.5)
    record_oom_kill()

    assert value("moorage_image_pull_bytes_total") == before[0] + 1234
    assert value("moorage_image_pull_duration_seconds_count") == before[1] + 1
    assert value("moorage_oom_kills_total") == before[2] + 1


def test_written_text_is_what_generate_latest_writes_for_the_families() -> None:
    odd = container(container='say "hi"\\now', pod="web\n0", stats=CgroupStats())
    samples = [container(), odd, container(filesystem=None, name="f" * 64)]
    written = collector(samples, [pod()]).text()

    assert written.decode().splitlines() == scrape(collector(samples, [pod()]))
    assert 'container="say \\"hi\\"\\\\now"' in written.decode()


def test_written_text_of_a_failing_snapshot_is_the_scrape_error_alone() -> None:
    def broken() -> tuple[list[ContainerSample], list[PodSample]]:
        raise OSError("cgroup gone")

    assert ContainerCollector(broken).text().decode().splitlines() == [
        "# HELP container_scrape_error 1 if there was an error while getting container "
        "metrics, 0 otherwise",
        "# TYPE container_scrape_error gauge",
        "container_scrape_error 1.0",
    ]


def test_written_text_with_no_containers_is_only_the_scrape_error() -> None:
    assert collector([], []).text().decode().splitlines()[-1] == "container_scrape_error 0.0"
