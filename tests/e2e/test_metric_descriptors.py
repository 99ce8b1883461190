"""ListMetricDescriptors and ListPodSandboxMetrics as a kubelet reading /metrics/cadvisor from
the runtime sees them: every cAdvisor container series described from the first call, a value
for each for every container, and the same names and labels on the Prometheus endpoint."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, pulled, running_command
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

BASE = ["container", "id", "image", "name", "namespace", "pod"]
DEVICE = [*BASE, "device"]
# The series kubelet's /metrics/cadvisor exposes for containers, with cAdvisor's labels.
CADVISOR = {
    "container_blkio_device_usage_total": [*BASE, "device", "major", "minor", "operation"],
    "container_cpu_cfs_periods_total": BASE,
    "container_cpu_cfs_throttled_periods_total": BASE,
    "container_cpu_cfs_throttled_seconds_total": BASE,
    "container_cpu_load_average_10s": BASE,
    "container_cpu_system_seconds_total": BASE,
    "container_cpu_usage_seconds_total": [*BASE, "cpu"],
    "container_cpu_user_seconds_total": BASE,
    "container_file_descriptors": BASE,
    "container_fs_inodes_free": DEVICE,
    "container_fs_inodes_total": DEVICE,
    "container_fs_io_current": DEVICE,
    "container_fs_io_time_seconds_total": DEVICE,
    "container_fs_io_time_weighted_seconds_total": DEVICE,
    "container_fs_limit_bytes": DEVICE,
    "container_fs_read_seconds_total": DEVICE,
    "container_fs_reads_bytes_total": DEVICE,
    "container_fs_reads_merged_total": DEVICE,
    "container_fs_reads_total": DEVICE,
    "container_fs_sector_reads_total": DEVICE,
    "container_fs_sector_writes_total": DEVICE,
    "container_fs_usage_bytes": DEVICE,
    "container_fs_write_seconds_total": DEVICE,
    "container_fs_writes_bytes_total": DEVICE,
    "container_fs_writes_merged_total": DEVICE,
    "container_fs_writes_total": DEVICE,
    "container_last_seen": BASE,
    "container_memory_cache": BASE,
    "container_memory_failcnt": BASE,
    "container_memory_failures_total": [*BASE, "failure_type", "scope"],
    "container_memory_kernel_usage": BASE,
    "container_memory_mapped_file": BASE,
    "container_memory_max_usage_bytes": BASE,
    "container_memory_rss": BASE,
    "container_memory_swap": BASE,
    "container_memory_usage_bytes": BASE,
    "container_memory_working_set_bytes": BASE,
    "container_oom_events_total": BASE,
    "container_processes": BASE,
    "container_sockets": BASE,
    "container_spec_cpu_period": BASE,
    "container_spec_cpu_quota": BASE,
    "container_spec_cpu_shares": BASE,
    "container_spec_memory_limit_bytes": BASE,
    "container_spec_memory_reservation_limit_bytes": BASE,
    "container_spec_memory_swap_limit_bytes": BASE,
    "container_start_time_seconds": BASE,
    "container_tasks_state": [*BASE, "state"],
    "container_threads": BASE,
    "container_threads_max": BASE,
    "container_ulimits_soft": [*BASE, "ulimit"],
}
NETWORK = {
    f"container_network_{direction}_{figure}_total": [*BASE, "interface"]
    for direction in ("receive", "transmit")
    for figure in ("bytes", "errors", "packets_dropped", "packets")
}


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def descriptors(agent: Agent) -> dict[str, list[str]]:
    response = agent.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest())
    return {d.name: list(d.label_keys) for d in response.descriptors}


def test_the_first_call_describes_every_cadvisor_series(agent: Agent) -> None:
    """A fresh agent, no container yet: the kubelet builds its descriptor cache from this."""
    described = descriptors(agent)

    assert {name: described.get(name) for name in CADVISOR | NETWORK} == CADVISOR | NETWORK
    help_texts = agent.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest())
    assert all(d.help for d in help_texts.descriptors)


def test_every_descriptor_has_a_value_for_a_running_container(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))
    # Its page faults are counted once `sleep` itself runs, not while the runtime's init waits.
    running_command(agent, container_id, ["sleep", "60"])
    described = descriptors(agent)

    response = agent.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest())

    (mine,) = [m for m in response.pod_metrics if m.pod_sandbox_id == pod.id]
    (container,) = mine.container_metrics
    assert container.container_id == container_id
    by_name: dict[str, list[pb.Metric]] = {}
    for metric in container.metrics:
        by_name.setdefault(metric.name, []).append(metric)
    assert set(by_name) == set(CADVISOR)
    for name, metrics in by_name.items():
        assert all(len(m.label_values) == len(described[name]) for m in metrics), name
    assert {m.name for m in mine.metrics} == set(NETWORK)
    # Gathered live, which the CRI marks with timestamp 0.
    assert {m.timestamp for m in [*container.metrics, *mine.metrics]} == {0}

    def one(name: str, **labels: str) -> int:
        keys = described[name]
        (value,) = [
            m.value.value
            for m in by_name[name]
            if all(m.label_values[keys.index(k)] == v for k, v in labels.items())
        ]
        return value

    assert one("container_processes") == 1
    assert one("container_threads") >= 1
    assert one("container_file_descriptors") >= 3
    assert one("container_tasks_state", state="sleeping") >= 1
    assert one("container_ulimits_soft", ulimit="max_open_files") > 0
    assert one("container_memory_working_set_bytes") > 0
    # The kernel charges a fault to the cgroup of the mm's owner: a sleeping busybox may show 0.
    assert one("container_memory_failures_total", failure_type="pgfault", scope="container") >= 0
    assert one("container_fs_limit_bytes") > one("container_fs_inodes_free") > 0
    operations = {
        m.label_values[described["container_blkio_device_usage_total"].index("operation")]
        for m in by_name["container_blkio_device_usage_total"]
    }
    assert operations == {"Read", "Write"}


def test_the_prometheus_endpoint_has_the_same_names_and_labels(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    pod.run(container_config(image, ["sleep", "60"]))
    name = pod.config.metadata.name
    described = descriptors(agent)

    def scraped() -> dict[str, set[tuple[str, ...]]]:
        response = httpx.get(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=10)
        response.raise_for_status()
        found: dict[str, set[tuple[str, ...]]] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.labels.get("pod") == name:
                    found.setdefault(sample.name, set()).add(tuple(sorted(sample.labels)))
        return found

    assert wait_until(lambda: set(NETWORK) <= set(scraped()))
    found = scraped()
    assert set(found) == set(CADVISOR) | set(NETWORK)
    for series, label_sets in found.items():
        assert label_sets == {tuple(sorted(described[series]))}, series
