"""RuntimeService: one servicer assembled from the RPC groups, one file each."""

from __future__ import annotations

from cri.container_rpcs import ContainerRpcs
from cri.pod_metrics_rpcs import PodMetricsRpcs
from cri.proto import api_pb2_grpc
from cri.runtime_info import RuntimeInfoRpcs
from cri.sandbox_rpcs import PodSandboxRpcs
from cri.stats_rpcs import StatsRpcs
from cri.streaming_rpcs import StreamingRpcs
from cri.unimplemented import CheckpointRpcs


class RuntimeService(
    RuntimeInfoRpcs,
    PodSandboxRpcs,
    ContainerRpcs,
    StatsRpcs,
    StreamingRpcs,
    PodMetricsRpcs,
    CheckpointRpcs,
    api_pb2_grpc.RuntimeServiceServicer,
):
    pass
