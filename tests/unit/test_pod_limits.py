"""The pod cgroup's limits from UpdatePodSandboxResources' resources and overhead."""

from __future__ import annotations

from runtime.pods.model import PodResources
from runtime.pods.pod_limits import pod_cgroup_limits
from runtime.resources import Resources


def test_limits_and_shares_are_the_containers_plus_the_overhead() -> None:
    limits = pod_cgroup_limits(
        PodResources(
            resources=Resources(
                cpu_shares=1024,
                cpu_quota=200_000,
                cpu_period=100_000,
                memory_limit_bytes=512 << 20,
                memory_swap_limit_bytes=1 << 30,
                hugepage_limits={"2MB": 8 << 20},
            ),
            overhead=Resources(
                cpu_shares=256,
                cpu_quota=25_000,
                memory_limit_bytes=128 << 20,
                hugepage_limits={"2MB": 2 << 20},
            ),
        )
    )

    assert limits.cpu_shares == 1280
    assert limits.cpu_quota == 225_000
    assert limits.cpu_period == 100_000
    assert limits.memory_limit_bytes == 640 << 20
    # Memory plus swap grows by the overhead's memory too, so it stays above the limit.
    assert limits.memory_swap_limit_bytes == (1 << 30) + (128 << 20)
    assert limits.hugepage_limits == {"2MB": 10 << 20}


def test_uncapped_containers_leave_the_pod_uncapped_whatever_the_overhead() -> None:
    limits = pod_cgroup_limits(
        PodResources(
            resources=Resources(cpu_quota=-1),
            overhead=Resources(cpu_quota=25_000, memory_limit_bytes=128 << 20, cpu_shares=2),
        )
    )

    assert limits.cpu_quota == -1
    assert limits.memory_limit_bytes == 0
    assert limits.cpu_shares == 2


def test_the_containers_cpuset_and_unified_keys_win_over_the_overhead_ones() -> None:
    limits = pod_cgroup_limits(
        PodResources(
            resources=Resources(cpuset_cpus="0-1", unified={"memory.high": "1000"}),
            overhead=Resources(
                cpuset_cpus="2", cpuset_mems="0", unified={"memory.high": "5", "pids.max": "9"}
            ),
        )
    )

    assert limits.cpuset_cpus == "0-1"
    assert limits.cpuset_mems == "0"
    assert limits.unified == {"memory.high": "1000", "pids.max": "9"}
