"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import functools
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri.config import config_as_dict
from cri.handlers import Handlers
from runtime.agent import Readiness
from runtime.pods import userns

RUNTIME_NAME = "moorage"
CRI_API_VERSION = "v1"
# VersionResponse.version predates runtime_api_version; containerd and CRI-O send "0.1.0".
CRI_API_VERSION_LEGACY = "0.1.0"


@functools.cache
def agent_version() -> str:
    try:
        return version("moorage")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _condition(kind: str, readiness: Readiness) -> Any:
    return pb.RuntimeCondition(
        type=kind, status=readiness.ready, reason=readiness.reason, message=readiness.message
    )


class RuntimeInfoRpcs(Handlers):
    async def Version(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.VersionResponse(
            version=CRI_API_VERSION_LEGACY,
            runtime_name=RUNTIME_NAME,
            runtime_version=agent_version(),
            runtime_api_version=CRI_API_VERSION,
        )

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        runtime = self.runtime
        conditions = [
            _condition("RuntimeReady", runtime.runtime_readiness()),
            _condition("NetworkReady", runtime.network_readiness()),
        ]
        # Recursive read-only and idmapped binds are staged on the host and the pod's user
        # namespace made by the agent, so every handler has them.
        features = pb.RuntimeHandlerFeatures(
            recursive_read_only_mounts=True, user_namespaces=userns.supported()
        )
        handlers = [
            pb.RuntimeHandler(name=name, features=features)
            for name in sorted(runtime.settings.handlers)
        ]
        # kubelet looks the default handler up under the empty name.
        handlers.insert(0, pb.RuntimeHandler(name="", features=features))
        info = {}
        if request.verbose:
            info["config"] = json.dumps(config_as_dict(self.config), sort_keys=True)
            info["podCIDR"] = runtime.pod_cidr
        return pb.StatusResponse(
            status=pb.RuntimeStatus(conditions=conditions),
            info=info,
            runtime_handlers=handlers,
            # kubelet refuses pods asking for SupplementalGroupsPolicy Strict otherwise.
            features=pb.RuntimeFeatures(supplemental_groups_policy=True),
        )

    async def RuntimeConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        driver = pb.SYSTEMD if self.runtime.settings.cgroup_driver == "systemd" else pb.CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def UpdateRuntimeConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.runtime.set_pod_cidr(request.runtime_config.network_config.pod_cidr)
        return pb.UpdateRuntimeConfigResponse()
