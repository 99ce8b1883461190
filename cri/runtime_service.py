"""RuntimeService: one servicer assembled from the RPC groups, one file each."""

from __future__ import annotations

from cri.container_rpcs import ContainerRpcs
from cri.runtime_info import RuntimeInfoRpcs
from cri.sandbox_rpcs import PodSandboxRpcs
from cri.unimplemented import UnimplementedFallback


class RuntimeService(RuntimeInfoRpcs, PodSandboxRpcs, ContainerRpcs, UnimplementedFallback):
    service_name = "runtime.v1.RuntimeService"
