"""A real Prometheus server scrapes the endpoint and answers a query with our sample's value."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from metrics.container_metrics import ContainerCollector, ContainerSample, PodSample
from metrics.endpoint import MetricsEndpoint, start_endpoint
from metrics.model import BlkioDevice, CgroupStats, CpuSpec, CpuStats, InterfaceStats, MemoryStats
from tests.prometheus_server import query_until, running_prometheus

WORKING_SET_BYTES = 123_456_789


@pytest.fixture
def pod_name() -> str:
    return f"scrape-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def endpoint(pod_name: str) -> Iterator[MetricsEndpoint]:
    sample = ContainerSample(
        container="app",
        pod=pod_name,
        namespace="default",
        id=f"/kubepods/pod-{pod_name}/c1",
        image="docker.io/library/busybox:latest",
        name="c1",
        # Every kind of family, untyped failcnt included: a scrape that fails to parse is
        # dropped whole, so the query below answers only if all of it parsed.
        stats=CgroupStats(
            cpu=CpuStats(usage_ns=5_000_000_000, periods=10, throttled_periods=1, throttled_ns=1),
            memory=MemoryStats(working_set_bytes=WORKING_SET_BYTES, failcnt=3, oom_kills=0),
            blkio=[BlkioDevice(major=7, minor=0, read_bytes=512)],
            cpu_spec=CpuSpec(shares=256, quota=20_000, period=100_000),
        ),
        start_time_s=time.time(),
    )
    pod = PodSample(pod_name, "default", f"/kubepods/pod-{pod_name}", [InterfaceStats("eth0")])
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ContainerCollector(lambda: ([sample], [pod])))
    served = start_endpoint("127.0.0.1:0", registry)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def prometheus_url(endpoint: MetricsEndpoint) -> Iterator[str]:
    with running_prometheus(f"127.0.0.1:{endpoint.port}") as url:
        yield url


def test_prometheus_scrapes_the_working_set_of_our_container(
    prometheus_url: str, pod_name: str
) -> None:
    query = f'container_memory_working_set_bytes{{pod="{pod_name}"}}'

    (result,) = query_until(prometheus_url, query, lambda results: True)

    assert result["metric"]["container"] == "app"
    assert float(result["value"][1]) == WORKING_SET_BYTES
