"""The pod cgroup's limits from UpdatePodSandboxResources' two parts, as kubelet sizes pod
cgroups: the containers' sum plus the pod's overhead."""

from __future__ import annotations

from runtime.pods.model import PodResources
from runtime.resources import Resources


def pod_cgroup_limits(pod: PodResources) -> Resources:
    r, o = pod.resources, pod.overhead
    return Resources(
        cpu_period=r.cpu_period or o.cpu_period,
        cpu_quota=_limit(r.cpu_quota, o.cpu_quota),
        # Shares are a weight, not a cap: the overhead's count even without the containers'.
        cpu_shares=r.cpu_shares + o.cpu_shares,
        memory_limit_bytes=_limit(r.memory_limit_bytes, o.memory_limit_bytes),
        # The swap limit caps memory plus swap, so the overhead's memory belongs in it.
        memory_swap_limit_bytes=_limit(
            r.memory_swap_limit_bytes, o.memory_swap_limit_bytes or o.memory_limit_bytes
        ),
        cpuset_cpus=r.cpuset_cpus or o.cpuset_cpus,
        cpuset_mems=r.cpuset_mems or o.cpuset_mems,
        hugepage_limits={
            size: _limit(limit, o.hugepage_limits.get(size, 0))
            for size, limit in r.hugepage_limits.items()
        },
        unified={**o.unified, **r.unified},
    )


def _limit(containers: int, overhead: int) -> int:
    # Containers without a cap (0: unset, -1: unlimited) leave the pod without one: the
    # overhead alone would squeeze the whole pod into the runtime's own share.
    if containers <= 0:
        return containers
    return containers + max(overhead, 0)
