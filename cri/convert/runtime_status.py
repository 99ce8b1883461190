"""Version, Status and RuntimeConfig answers: what the runtime is and what it can do."""

from __future__ import annotations

from cri.proto import api_pb2 as pb
from runtime.agent import Readiness


def condition_to_proto(kind: str, readiness: Readiness) -> pb.RuntimeCondition:
    return pb.RuntimeCondition(
        type=kind, status=readiness.ready, reason=readiness.reason, message=readiness.message
    )


def runtime_handlers_to_proto(names: list[str], user_namespaces: bool) -> list[pb.RuntimeHandler]:
    # Recursive read-only and idmapped binds are staged on the host and the pod's user
    # namespace made by the agent, so every handler has them.
    features = pb.RuntimeHandlerFeatures(
        recursive_read_only_mounts=True, user_namespaces=user_namespaces
    )
    # kubelet looks the default handler up under the empty name.
    return [pb.RuntimeHandler(name=name, features=features) for name in ["", *names]]


def cgroup_driver_to_proto(driver: str) -> pb.CgroupDriver.ValueType:
    return pb.SYSTEMD if driver == "systemd" else pb.CGROUPFS
