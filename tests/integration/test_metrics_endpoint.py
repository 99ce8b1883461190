"""The /metrics endpoint on a real socket, its body checked by Prometheus' own promtool."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from metrics.agent_metrics import StateCollector
from metrics.container_metrics import ContainerCollector, ContainerSample, PodSample
from metrics.endpoint import MetricsEndpoint, parse_address, start_endpoint
from metrics.model import CgroupStats, CpuSpec, CpuStats, InterfaceStats, MemoryStats

STATS = CgroupStats(
    cpu=CpuStats(usage_ns=3_000_000_000, user_ns=2_000_000_000, system_ns=1_000_000_000),
    memory=MemoryStats(usage_bytes=2048, working_set_bytes=1024, failcnt=0, limit_bytes=None),
    cpu_spec=CpuSpec(shares=1024, period=100_000),
)


def snapshot() -> tuple[list[ContainerSample], list[PodSample]]:
    sample = ContainerSample(
        container="app",
        pod="endpoint-pod",
        namespace="default",
        id="/kubepods/pod-uid-e/abc123",
        image="docker.io/library/busybox:latest",
        name="abc123",
        stats=STATS,
        start_time_s=1_700_000_000.0,
    )
    interfaces = [InterfaceStats(name="eth0", rx_bytes=10, tx_bytes=20)]
    pod = PodSample("endpoint-pod", "default", "/kubepods/pod-uid-e", interfaces)
    return [sample], [pod]


@pytest.fixture
def endpoint() -> Iterator[MetricsEndpoint]:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ContainerCollector(snapshot))
    registry.register(StateCollector(lambda: {"ready": 1}, lambda: {"running": 1}))
    served = start_endpoint("127.0.0.1:0", registry)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def text_endpoint() -> Iterator[MetricsEndpoint]:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StateCollector(lambda: {"ready": 1}, lambda: {"running": 1}))
    served = start_endpoint("127.0.0.1:0", registry, [ContainerCollector(snapshot)])
    try:
        yield served
    finally:
        served.close()


def test_a_text_collector_is_served_after_the_registry_gzipped(
    text_endpoint: MetricsEndpoint,
) -> None:
    response = httpx.get(
        f"http://127.0.0.1:{text_endpoint.port}/metrics",
        headers={"Accept-Encoding": "gzip"},
        timeout=5,
    )

    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    body = response.text
    assert 'moorage_pods{state="ready"} 1.0' in body
    assert 'container_memory_working_set_bytes{container="app"' in body
    assert body.index("moorage_pods") < body.index("container_scrape_error")


def test_a_text_collector_is_in_openmetrics_and_name_selections(
    text_endpoint: MetricsEndpoint,
) -> None:
    url = f"http://127.0.0.1:{text_endpoint.port}/metrics"
    openmetrics = httpx.get(url, headers={"Accept": "application/openmetrics-text"}, timeout=5)
    selected = httpx.get(url, params={"name[]": "container_cpu_usage_seconds_total"}, timeout=5)

    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert 'container_memory_working_set_bytes{container="app"' in openmetrics.text
    assert 'moorage_pods{state="ready"} 1.0' in openmetrics.text
    assert openmetrics.text.endswith("# EOF\n")
    assert [line.split("{")[0] for line in selected.text.splitlines() if line[0] != "#"] == [
        "container_cpu_usage_seconds_total"
    ]


def test_metrics_body_passes_promtool(endpoint: MetricsEndpoint) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (Debian package prometheus)")

    response = httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5)

    assert response.status_code == 200
    assert 'container_memory_working_set_bytes{container="app"' in response.text
    assert "process_resident_memory_bytes" in response.text
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=response.content,
        capture_output=True,
        timeout=30,
        check=False,
    )
    report = (check.stdout + check.stderr).decode()
    assert check.returncode == 0, report
    assert report.strip() == "", report


def test_other_paths_are_not_found(endpoint: MetricsEndpoint) -> None:
    for path in ("/", "/metric", "/metrics/extra", "/favicon.ico"):
        response = httpx.get(f"http://127.0.0.1:{endpoint.port}{path}", timeout=5)
        assert response.status_code == 404, path


def test_close_frees_the_port() -> None:
    served = start_endpoint("127.0.0.1:0", CollectorRegistry())
    port = served.port
    assert port != 0

    served.close()
    served.close()  # a second close is harmless

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", port))
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_the_process_collector_is_added_once_per_registry() -> None:
    registry = CollectorRegistry(auto_describe=True)
    first = start_endpoint("127.0.0.1:0", registry)
    second = start_endpoint("127.0.0.1:0", registry)
    try:
        body = httpx.get(f"http://127.0.0.1:{second.port}/metrics", timeout=5).text
    finally:
        first.close()
        second.close()

    assert body.count("\nprocess_resident_memory_bytes ") == 1


def test_an_ipv6_loopback_address_is_served() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        served = start_endpoint("[::1]:0", CollectorRegistry())
    except OSError as error:
        pytest.skip(f"cannot bind ::1: {error}")
    try:
        response = httpx.get(f"http://[::1]:{served.port}/metrics", timeout=5)
        assert response.status_code == 200
    finally:
        served.close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9777", ("127.0.0.1", 9777)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9777", ("::1", 9777)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_addresses_are_parsed(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1", "expected host:port"),
        (":9777", "expected host:port"),
        ("::1:9777", "needs brackets"),
        ("[::1:9777", "unbalanced brackets"),
        ("[localhost]:9777", "not an IPv6 address"),
        ("127.0.0.1:http", "not in 0-65535"),
        ("127.0.0.1:65536", "not in 0-65535"),
        ("127.0.0.1:-1", "not in 0-65535"),
    ],
)
def test_a_bad_address_is_rejected_with_the_reason(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(address)


def test_an_unresolvable_host_is_a_bad_address() -> None:
    with pytest.raises(ValueError, match="cannot resolve"):
        start_endpoint("no-such-host.invalid:0", CollectorRegistry())
