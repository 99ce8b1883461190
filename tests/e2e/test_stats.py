"""The CRI stats RPCs against running containers: figures read fresh from the cgroups and the
pod's network namespace, the writable layer from the background measurement."""

from __future__ import annotations

import socket
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, pulled
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

MIB = 1024 * 1024


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def container_stats(agent: Agent, container_id: str) -> Any:
    return agent.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=container_id)).stats


def pod_stats(agent: Agent, pod_id: str) -> Any:
    return agent.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats


def test_a_busy_container_uses_cpu_between_two_reads(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    busy = pod.run(container_config(image, ["sh", "-c", "while :; do :; done"]))
    first = container_stats(agent, busy).cpu.usage_core_nano_seconds.value

    assert wait_until(
        lambda: container_stats(agent, busy).cpu.usage_core_nano_seconds.value > first + 10**7
    )
    # The rate is over the time since the previous read: reads a millisecond apart can fall
    # between two of the kernel's usage updates and see none, so wait for a rate instead.
    assert wait_until(
        lambda: container_stats(agent, busy).cpu.usage_nano_cores.value > 10**8
    )  # a tenth of a core at least


def test_memory_working_set_reaches_what_the_container_holds(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    holder = pod.run(
        container_config(image, ["sh", "-c", "dd if=/dev/zero bs=24M count=1 | sleep 60"])
    )

    assert wait_until(
        lambda: container_stats(agent, holder).memory.working_set_bytes.value >= 24 * MIB
    )
    memory = container_stats(agent, holder).memory
    assert memory.usage_bytes.value >= memory.working_set_bytes.value
    assert memory.rss_bytes.value >= 24 * MIB


def test_the_writable_layer_is_measured(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    writer = pod.run(
        container_config(image, ["sh", "-c", "head -c 3000000 /dev/zero > /big; sleep 60"])
    )

    def layer_bytes() -> int:
        stats = container_stats(agent, writer)
        return int(stats.writable_layer.used_bytes.value) if stats.HasField("writable_layer") else 0

    assert wait_until(lambda: layer_bytes() > 0)
    layer = container_stats(agent, writer).writable_layer
    assert layer.fs_id.mountpoint == str(agent.root_dir / "containers")
    assert layer.inodes_used.value >= 1


def test_pod_stats_count_processes_and_network_traffic(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))
    ip = agent.pod_status(pod.id).network.ip
    before = pod_stats(agent, pod.id).linux.network.default_interface.rx_bytes.value

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(20):
            sender.sendto(b"x" * 1000, (ip, 9))

    assert wait_until(
        lambda: (
            pod_stats(agent, pod.id).linux.network.default_interface.rx_bytes.value
            >= before + 20_000
        )
    )
    stats = pod_stats(agent, pod.id).linux
    assert stats.network.default_interface.name == "eth0"
    assert stats.process.process_count.value >= 1
    assert [c.attributes.id for c in stats.containers] == [container_id]
    assert stats.memory.working_set_bytes.value > 0


def test_list_container_stats_filters_by_pod(agent: Agent, image: str) -> None:
    first, second = Pod(agent), Pod(agent)
    mine = first.run(container_config(image, ["sleep", "60"]))
    second.run(container_config(image, ["sleep", "60"]))

    listed = agent.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(pod_sandbox_id=first.id))
    ).stats
    every = agent.runtime.ListContainerStats(pb.ListContainerStatsRequest()).stats
    pods = agent.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats

    assert [s.attributes.id for s in listed] == [mine]
    assert len(every) == 2
    assert {p.attributes.id for p in pods} == {first.id, second.id}


def test_unknown_ids_are_not_found(agent: Agent) -> None:
    assert_rpc_error(lambda: container_stats(agent, "f" * 64), grpc.StatusCode.NOT_FOUND, "f" * 64)
    assert_rpc_error(lambda: pod_stats(agent, "e" * 64), grpc.StatusCode.NOT_FOUND, "e" * 64)


def test_pod_sandbox_metrics_carry_cadvisor_names(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    descriptors = agent.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()).descriptors
    metrics = agent.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics

    by_name = {d.name: d for d in descriptors}
    assert "pod" in by_name["container_memory_working_set_bytes"].label_keys
    assert "container_cpu_usage_seconds_total" in by_name
    (mine,) = [m for m in metrics if m.pod_sandbox_id == pod.id]
    (container,) = mine.container_metrics
    assert container.container_id == container_id
    working_set = [m for m in container.metrics if m.name == "container_memory_working_set_bytes"]
    assert working_set and working_set[0].value.value > 0
    assert any(m.name.startswith("container_network_") for m in mine.metrics)
