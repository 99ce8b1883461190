"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import functools
import json
from importlib.metadata import PackageNotFoundError, version

from cri.config import config_as_dict
from cri.convert import runtime_status as convert
from cri.handlers import Context, Handlers
from cri.proto import api_pb2 as pb

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


class RuntimeInfoRpcs(Handlers):
    async def Version(self, request: pb.VersionRequest, context: Context) -> pb.VersionResponse:
        return pb.VersionResponse(
            version=CRI_API_VERSION_LEGACY,
            runtime_name=RUNTIME_NAME,
            runtime_version=agent_version(),
            runtime_api_version=CRI_API_VERSION,
        )

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        status = self.runtime.status()
        conditions = [
            convert.condition_to_proto("RuntimeReady", status.runtime),
            convert.condition_to_proto("NetworkReady", status.network),
        ]
        handlers = convert.runtime_handlers_to_proto(status.handlers, status.user_namespaces)
        info = {}
        if request.verbose:
            info["config"] = json.dumps(config_as_dict(self.config), sort_keys=True)
            info["podCIDR"] = status.pod_cidr
        return pb.StatusResponse(
            status=pb.RuntimeStatus(conditions=conditions),
            info=info,
            runtime_handlers=handlers,
            # kubelet refuses pods asking for these otherwise.
            features=pb.RuntimeFeatures(
                supplemental_groups_policy=True,
                user_namespaces_host_network=True,
                mount_options=True,
            ),
        )

    async def RuntimeConfig(
        self, request: pb.RuntimeConfigRequest, context: Context
    ) -> pb.RuntimeConfigResponse:
        driver = convert.cgroup_driver_to_proto(self.runtime.settings.cgroup_driver)
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: Context
    ) -> pb.UpdateRuntimeConfigResponse:
        self.runtime.set_pod_cidr(request.runtime_config.network_config.pod_cidr)
        return pb.UpdateRuntimeConfigResponse()
