"""The OCI runtime spec (config.json) of a container: the CRI request merged with its image."""

from __future__ import annotations

import resource
import socket
from dataclasses import dataclass
from typing import Any

from runtime.containers.model import ContainerConfig, ImageRuntimeConfig, ProcessUser
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.oci.capabilities import agent_has, container_capabilities
from runtime.oci.mounts import all_mounts, devices, prepare_mount_sources, rootfs_propagation
from runtime.oci.seccomp import to_oci
from runtime.pods.model import IdMapping, NamespaceMode, Sandbox
from runtime.resources import Resources

__all__ = ["SpecInputs", "build_spec", "prepare_mount_sources", "resources_to_oci"]

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# containerd's value: enough for any server, and the same on every node.
NOFILE_LIMIT = 1048576
DEFAULT_MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
DEFAULT_READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]


@dataclass(frozen=True)
class SpecInputs:
    container_id: str
    config: ContainerConfig
    image: ImageRuntimeConfig
    user: ProcessUser
    # The mounted overlay rootfs, absolute.
    rootfs: str
    sandbox: Sandbox
    cgroups_path: str
    # The profile in containers/common's format; None runs unconfined.
    seccomp_profile: dict[str, Any] | None = None
    # What the agent itself may set: lower values need CAP_SYS_RESOURCE and fail in runc.
    oom_score_adj_min: int = -1000
    # The running target container's pid, for a TARGET pid namespace.
    target_pid: int | None = None
    cgroup_v2: bool = False
    # RLIMIT_NOFILE of the process; None: containerd's value, or less if the agent cannot.
    nofile_limit: int | None = None


def build_spec(inputs: SpecInputs) -> dict[str, Any]:
    config = inputs.config
    security = config.security
    capabilities = container_capabilities(security)
    device_nodes, device_rules = devices(config)
    resources = resources_to_oci(config.resources)
    resources["devices"] = device_rules
    linux: dict[str, Any] = {
        "namespaces": namespaces(inputs),
        "cgroupsPath": inputs.cgroups_path,
        "resources": resources,
        "devices": device_nodes,
    }
    if propagation := rootfs_propagation(config):
        linux["rootfsPropagation"] = propagation
    if (userns := inputs.sandbox.config.namespaces.user) is not None:
        # Joined by path; runc 1.1 still wants the maps to know the host's root ids.
        linux["uidMappings"] = [_oci_mapping(userns.uids)]
        linux["gidMappings"] = [_oci_mapping(userns.gids)]
    if not security.privileged:
        linux["maskedPaths"] = list(security.masked_paths or DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(security.readonly_paths or DEFAULT_READONLY_PATHS)
        if inputs.seccomp_profile is not None:
            linux["seccomp"] = to_oci(inputs.seccomp_profile, capabilities)
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(inputs, capabilities),
        "root": {"path": inputs.rootfs, "readonly": security.readonly_rootfs},
        "mounts": all_mounts(config, inputs.sandbox),
        "annotations": {
            **config.annotations,
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": inputs.sandbox.id,
            "io.kubernetes.cri.container-name": config.name,
        },
        "linux": linux,
    }
    if "uts" in inputs.sandbox.pins and inputs.sandbox.config.hostname:
        spec["hostname"] = inputs.sandbox.config.hostname
    return spec


def process_args(config: ContainerConfig, image: ImageRuntimeConfig) -> list[str]:
    """Docker's rules: a command replaces the entrypoint and drops the image's Cmd with it."""
    if config.command:
        return [*config.command, *config.args]
    # An Entrypoint of [""] is how an image says "none" while keeping a Cmd.
    entrypoint = [] if image.entrypoint == [""] else image.entrypoint
    return [*entrypoint, *(config.args or image.cmd)]


def process_env(
    config: ContainerConfig, image: ImageRuntimeConfig, user: ProcessUser, hostname: str
) -> list[str]:
    """HOSTNAME, then the image's Env, then the request's, each overriding by name."""
    env: dict[str, str] = {"HOSTNAME": hostname}
    for entry in image.env:
        name, _, value = entry.partition("=")
        if name:
            env[name] = value
    env.update(config.envs)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", user.home)
    return [f"{name}={value}" for name, value in env.items()]


def _process(inputs: SpecInputs, capabilities: list[str]) -> dict[str, Any]:
    config = inputs.config
    args = process_args(config, inputs.image)
    if not args:
        raise InvalidArgument(
            "no command specified: neither config.command/config.args nor the image's "
            "Entrypoint/Cmd name one"
        )
    # A host-network pod has no hostname of its own: it sees the node's.
    hostname = inputs.sandbox.config.hostname or socket.gethostname()
    user = inputs.user
    nofile = inputs.nofile_limit if inputs.nofile_limit is not None else nofile_ceiling()
    return {
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "args": args,
        "env": process_env(config, inputs.image, user, hostname),
        "cwd": config.working_dir or inputs.image.working_dir or "/",
        "capabilities": {
            "bounding": list(capabilities),
            "effective": list(capabilities),
            "permitted": list(capabilities),
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": config.security.no_new_privs,
        "oomScoreAdj": max(config.resources.oom_score_adj, inputs.oom_score_adj_min),
    }


def nofile_ceiling() -> int:
    """containerd's RLIMIT_NOFILE, or the agent's own hard limit when it lacks
    CAP_SYS_RESOURCE: raising a hard limit needs it, and runc then fails with EPERM."""
    if agent_has("CAP_SYS_RESOURCE"):
        return NOFILE_LIMIT
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)


def namespaces(inputs: SpecInputs) -> list[dict[str, str]]:
    sandbox = inputs.sandbox
    pod_modes = sandbox.config.namespaces
    result = [{"type": "mount"}]
    if sandbox.config.namespaces.user is not None:
        result.append({"type": "user", "path": sandbox.pins["user"]})
    pid = _pid_namespace(inputs)
    if pid is not None:
        result.append(pid)
    # The pod's UTS namespace follows its network one (see pod_namespace_kinds).
    for kind, oci_type, mode in (
        ("net", "network", pod_modes.network),
        ("ipc", "ipc", pod_modes.ipc),
        ("uts", "uts", pod_modes.network),
    ):
        if kind in sandbox.pins:
            result.append({"type": oci_type, "path": sandbox.pins[kind]})
        elif mode is not NamespaceMode.NODE:
            raise FailedPrecondition(
                f"pod sandbox {sandbox.id} has no {kind} namespace for its {mode.value} mode"
            )
    if inputs.cgroup_v2:
        result.append({"type": "cgroup"})
    return result


def _oci_mapping(mapping: IdMapping) -> dict[str, int]:
    return {"containerID": mapping.container_id, "hostID": mapping.host_id, "size": mapping.length}


def _pid_namespace(inputs: SpecInputs) -> dict[str, str] | None:
    mode = inputs.config.security.namespaces.pid
    infra = inputs.sandbox.infra
    if mode is NamespaceMode.NODE:
        return None
    if mode is NamespaceMode.POD and infra is not None:
        return {"type": "pid", "path": f"/proc/{infra.pid}/ns/pid"}
    if mode is NamespaceMode.TARGET:
        if inputs.target_pid is None:
            raise InvalidArgument(
                "config.linux.security_context.namespace_options.target_id names no running "
                "container for the TARGET pid namespace"
            )
        return {"type": "pid", "path": f"/proc/{inputs.target_pid}/ns/pid"}
    return {"type": "pid"}


def resources_to_oci(resources: Resources) -> dict[str, Any]:
    """OCI linux.resources for the set fields only (also `runc update --resources` input).

    oom_score_adj is a process attribute, not a resource: it is not here.
    """
    oci: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if resources.cpu_shares:
        cpu["shares"] = resources.cpu_shares
    if resources.cpu_quota:
        cpu["quota"] = resources.cpu_quota
    if resources.cpu_period:
        cpu["period"] = resources.cpu_period
    if resources.cpuset_cpus:
        cpu["cpus"] = resources.cpuset_cpus
    if resources.cpuset_mems:
        cpu["mems"] = resources.cpuset_mems
    if cpu:
        oci["cpu"] = cpu
    memory: dict[str, Any] = {}
    if resources.memory_limit_bytes:
        memory["limit"] = resources.memory_limit_bytes
    if resources.memory_swap_limit_bytes:
        memory["swap"] = resources.memory_swap_limit_bytes
    if memory:
        oci["memory"] = memory
    if resources.hugepage_limits:
        oci["hugepageLimits"] = [
            {"pageSize": size, "limit": limit}
            for size, limit in sorted(resources.hugepage_limits.items())
        ]
    if resources.unified:
        oci["unified"] = dict(resources.unified)
    return oci
