"""The filters of the List RPCs. An unset field selects everything."""

from __future__ import annotations

from cri.convert import containers, sandboxes
from cri.convert.enums import enum_value
from cri.proto import api_pb2 as pb
from runtime.containers.model import ContainerFilter
from runtime.pods.model import SandboxFilter


def sandbox_filter_from_proto(
    request: pb.ListPodSandboxRequest | pb.StreamPodSandboxesRequest,
) -> SandboxFilter:
    if not request.HasField("filter"):
        return SandboxFilter()
    f = request.filter
    state = None
    if f.HasField("state"):
        state = enum_value(sandboxes.STATES, f.state.state, "filter.state.state")
    return SandboxFilter(id_prefix=f.id, state=state, label_selector=dict(f.label_selector))


def container_filter_from_proto(
    request: pb.ListContainersRequest | pb.StreamContainersRequest,
) -> ContainerFilter:
    if not request.HasField("filter"):
        return ContainerFilter()
    f = request.filter
    state = None
    if f.HasField("state"):
        state = enum_value(containers.STATES, f.state.state, "filter.state.state")
    return ContainerFilter(
        id_prefix=f.id,
        state=state,
        sandbox_id_prefix=f.pod_sandbox_id,
        label_selector=dict(f.label_selector),
    )


def container_stats_filter_from_proto(
    request: pb.ListContainerStatsRequest | pb.StreamContainerStatsRequest,
) -> ContainerFilter:
    f = request.filter
    return ContainerFilter(
        id_prefix=f.id, sandbox_id_prefix=f.pod_sandbox_id, label_selector=dict(f.label_selector)
    )


def pod_stats_filter_from_proto(
    request: pb.ListPodSandboxStatsRequest | pb.StreamPodSandboxStatsRequest,
) -> SandboxFilter:
    f = request.filter
    return SandboxFilter(id_prefix=f.id, label_selector=dict(f.label_selector))
