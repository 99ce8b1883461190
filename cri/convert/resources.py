"""Linux container resources: CPU, memory, cpusets, hugepages and unified cgroup keys."""

from __future__ import annotations

from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument
from runtime.pods.model import PodResources
from runtime.resources import Resources


def resources_from_proto(r: pb.LinuxContainerResources) -> Resources:
    return Resources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_bytes=r.memory_limit_in_bytes,
        memory_swap_limit_bytes=r.memory_swap_limit_in_bytes,
        oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        hugepage_limits={h.page_size: h.limit for h in r.hugepage_limits},
        unified=dict(r.unified),
    )


def resources_update_from_proto(request: pb.UpdateContainerResourcesRequest) -> Resources:
    """UpdateContainerResourcesRequest: Moorage honours the Linux resources only."""
    if not request.HasField("linux"):
        raise InvalidArgument("linux resources are missing")
    return resources_from_proto(request.linux)


def pod_resources_from_proto(request: pb.UpdatePodSandboxResourcesRequest) -> PodResources:
    """UpdatePodSandboxResourcesRequest: either part may be absent, meaning nothing set."""
    return PodResources(
        resources=resources_from_proto(request.resources),
        overhead=resources_from_proto(request.overhead),
    )


def resources_to_proto(r: Resources) -> pb.ContainerResources:
    return pb.ContainerResources(
        linux=pb.LinuxContainerResources(
            cpu_period=r.cpu_period,
            cpu_quota=r.cpu_quota,
            cpu_shares=r.cpu_shares,
            memory_limit_in_bytes=r.memory_limit_bytes,
            memory_swap_limit_in_bytes=r.memory_swap_limit_bytes,
            oom_score_adj=r.oom_score_adj,
            cpuset_cpus=r.cpuset_cpus,
            cpuset_mems=r.cpuset_mems,
            hugepage_limits=[
                pb.HugepageLimit(page_size=k, limit=v) for k, v in r.hugepage_limits.items()
            ],
            unified=r.unified,
        )
    )
