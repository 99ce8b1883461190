"""The agent's Prometheus endpoint against running containers: cAdvisor's names and labels,
figures read fresh at each scrape, containers that went away gone from the next one."""

from __future__ import annotations

import shutil
import socket
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, pulled, remove
from tests.prometheus_server import query_until, running_prometheus
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

MIB = 1024 * 1024


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def scrape(agent: Agent) -> str:
    response = httpx.get(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


def value(text: str, metric: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_busy_container_cpu_grows_between_scrapes(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    pod.run(container_config(image, ["sh", "-c", "while :; do :; done"], name="burner"))
    name = pod.config.metadata.name

    def cpu() -> float:
        return value(scrape(agent), "container_cpu_usage_seconds_total", pod=name) or 0.0

    first = cpu()
    assert wait_until(lambda: cpu() > first + 0.05)
    text = scrape(agent)
    labels = {"pod": name, "namespace": pod.config.metadata.namespace, "container": "burner"}
    assert value(text, "container_cpu_usage_seconds_total", **labels) is not None
    assert value(text, "container_start_time_seconds", **labels) is not None


def test_working_set_reaches_what_the_container_holds(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    script = "dd if=/dev/zero bs=24M count=1 | sleep 60"
    pod.run(container_config(image, ["sh", "-c", script], name="holder"))
    name = pod.config.metadata.name

    assert wait_until(
        lambda: (
            (value(scrape(agent), "container_memory_working_set_bytes", pod=name) or 0) >= 24 * MIB
        )
    )


def test_pod_network_counters_grow_after_traffic(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    pod.run(container_config(image, ["sleep", "60"]))
    name = pod.config.metadata.name
    ip = agent.pod_status(pod.id).network.ip

    def received() -> float:
        text = scrape(agent)
        return value(text, "container_network_receive_bytes_total", pod=name, interface="eth0") or 0

    before = received()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(20):
            sender.sendto(b"x" * 1000, (ip, 9))

    assert wait_until(lambda: received() >= before + 20_000)


def test_a_removed_container_drops_out_and_states_are_counted(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))
    assert value(scrape(agent), "container_memory_usage_bytes", name=container_id) is not None
    assert value(scrape(agent), "moorage_containers", state="running") == 1

    remove(agent, container_id)

    text = scrape(agent)
    assert value(text, "container_memory_usage_bytes", name=container_id) is None
    assert value(text, "moorage_containers", state="running") is None
    assert (value(text, "moorage_cri_requests_total", method="RemoveContainer") or 0) >= 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (prometheus)")
def test_promtool_accepts_the_endpoint_output(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    pod.run(container_config(image, ["sleep", "60"]))

    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scrape(agent),
        capture_output=True,
        text=True,
        check=False,
    )

    # 3 is lint findings only, and cAdvisor's own name for a gauge ends in _total: kubelet's
    # scrapes get the same finding, and renaming it would break the dashboards that use it.
    cadvisors_own = {
        'container_fs_inodes_total non-counter metrics should not have "_total" suffix'
    }
    findings = set(checked.stderr.splitlines())
    assert checked.returncode in (0, 3), checked.stdout + checked.stderr
    assert findings <= cadvisors_own, checked.stdout + checked.stderr


def test_prometheus_server_queries_a_running_containers_working_set(
    agent: Agent, image: str
) -> None:
    pod = Pod(agent)
    script = "dd if=/dev/zero bs=24M count=1 | sleep 60"
    pod.run(container_config(image, ["sh", "-c", script], name="held"))
    query = f'container_memory_working_set_bytes{{pod="{pod.config.metadata.name}"}}'

    with running_prometheus(f"127.0.0.1:{agent.metrics_port}") as url:
        (result,) = query_until(url, query, lambda r: float(r[0]["value"][1]) >= 24 * MIB)

    assert result["metric"]["container"] == "held"
    assert result["metric"]["namespace"] == pod.config.metadata.namespace
