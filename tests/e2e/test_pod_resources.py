"""UpdatePodSandboxResources: the pod cgroup's v1 files, PodSandboxStatus(verbose), refusals
that change nothing, and the figures across an agent restart."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import grpc

from cri.proto import api_pb2 as pb
from tests.e2e.agent import RPC_TIMEOUT_S, Agent
from tests.e2e.containers import Pod, container_config, pulled
from tests.e2e.kernel import CGROUP_FS
from tests.e2e.pods import assert_rpc_error, pod_config
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

MIB = 1024 * 1024
RESOURCES = pb.LinuxContainerResources(
    cpu_shares=1024,
    cpu_period=100_000,
    cpu_quota=150_000,
    memory_limit_in_bytes=256 * MIB,
    cpuset_cpus="0",
)
OVERHEAD = pb.LinuxContainerResources(
    cpu_shares=128, cpu_quota=10_000, memory_limit_in_bytes=32 * MIB
)


def update(agent: Agent, pod_id: str, resources: Any, overhead: Any = None) -> None:
    agent.runtime.UpdatePodSandboxResources(
        pb.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod_id, resources=resources, overhead=overhead
        ),
        timeout=RPC_TIMEOUT_S,
    )


def pod_cgroup_file(agent: Agent, pod_id: str, controller: str, name: str) -> Path:
    cgroup: str = agent.pod_info(pod_id)["cgroup"]
    return CGROUP_FS / controller / cgroup.strip("/") / name


def pod_limits(agent: Agent, pod_id: str) -> dict[str, str]:
    files = [
        ("cpu", "cpu.shares"),
        ("cpu", "cpu.cfs_period_us"),
        ("cpu", "cpu.cfs_quota_us"),
        ("memory", "memory.limit_in_bytes"),
        ("cpuset", "cpuset.cpus"),
    ]
    return {
        name: pod_cgroup_file(agent, pod_id, controller, name).read_text().strip()
        for controller, name in files
    }


def reported(agent: Agent, pod_id: str) -> dict[str, Any]:
    resources: dict[str, Any] = agent.pod_info(pod_id)["resources"]
    return resources


EXPECTED_FILES = {
    "cpu.shares": "1152",
    "cpu.cfs_period_us": "100000",
    "cpu.cfs_quota_us": "160000",
    "memory.limit_in_bytes": str(288 * MIB),
    "cpuset.cpus": "0",
}


def test_pod_resources_plus_overhead_land_in_the_pod_cgroup_and_in_the_status(
    agent: Agent,
) -> None:
    pod_id = agent.run_pod(pod_config())
    assert reported(agent, pod_id) is None

    update(agent, pod_id, RESOURCES, OVERHEAD)

    assert pod_limits(agent, pod_id) == EXPECTED_FILES
    figures = reported(agent, pod_id)
    assert figures["resources"]["memory_limit_bytes"] == 256 * MIB
    assert figures["resources"]["cpuset_cpus"] == "0"
    assert figures["overhead"]["cpu_shares"] == 128


def test_invalid_pod_resources_are_invalid_argument_and_change_nothing(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    update(agent, pod_id, RESOURCES, OVERHEAD)
    before = reported(agent, pod_id)

    refusals: list[tuple[Any, str]] = [
        (pb.LinuxContainerResources(memory_limit_in_bytes=-1), "memory_limit_in_bytes"),
        (pb.LinuxContainerResources(cpu_shares=1, memory_limit_in_bytes=MIB), "cpu_shares"),
        (pb.LinuxContainerResources(cpuset_cpus="0-x"), "does not parse"),
    ]
    for bad, message in refusals:
        assert_rpc_error(
            functools.partial(update, agent, pod_id, bad),
            grpc.StatusCode.INVALID_ARGUMENT,
            message,
        )

    assert pod_limits(agent, pod_id) == EXPECTED_FILES
    assert reported(agent, pod_id) == before


def test_a_memory_limit_below_the_pods_usage_is_refused_and_the_old_limits_stay(
    agent: Agent, registry: LocalRegistry
) -> None:
    pod = Pod(agent)
    update(agent, pod.id, RESOURCES, OVERHEAD)
    before = reported(agent, pod.id)
    # dd fills a 24 MiB buffer and blocks writing it to a pipe nobody reads: anonymous
    # memory, which without swap cannot be reclaimed.
    script = "dd if=/dev/zero bs=24M count=1 | sleep 60"
    pod.run(container_config(pulled(agent, registry), ["sh", "-c", script]))
    usage = pod_cgroup_file(agent, pod.id, "memory", "memory.usage_in_bytes")
    assert wait_until(lambda: int(usage.read_text()) > 24 * MIB)

    # cpu.shares is written before the memory limit the kernel refuses: it must be put back.
    assert_rpc_error(
        lambda: update(
            agent,
            pod.id,
            pb.LinuxContainerResources(cpu_shares=4096, memory_limit_in_bytes=8 * MIB),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "memory.limit_in_bytes",
        "limits unchanged",
    )

    assert pod_limits(agent, pod.id) == EXPECTED_FILES
    assert reported(agent, pod.id) == before


def test_pod_resources_of_unknown_unnamed_and_stopped_pods_are_refused(agent: Agent) -> None:
    assert_rpc_error(lambda: update(agent, "f" * 64, RESOURCES), grpc.StatusCode.NOT_FOUND)
    assert_rpc_error(
        lambda: update(agent, "", RESOURCES), grpc.StatusCode.INVALID_ARGUMENT, "empty"
    )
    pod_id = agent.run_pod(pod_config())
    agent.stop_pod(pod_id)

    assert_rpc_error(
        lambda: update(agent, pod_id, RESOURCES), grpc.StatusCode.FAILED_PRECONDITION, "notready"
    )


def test_pod_resources_survive_an_agent_restart(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    update(agent, pod_id, RESOURCES, OVERHEAD)
    before = reported(agent, pod_id)

    agent.restart()

    assert reported(agent, pod_id) == before
    assert pod_limits(agent, pod_id) == EXPECTED_FILES
