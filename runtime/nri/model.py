"""Moorage's pods, containers and resources as the NRI API describes them to plugins.

A container being created is described from its OCI spec (what it will really run with:
image defaults, pod mounts, device rules); one without a spec at hand from its CRI config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from runtime.containers.model import Container, ContainerState, SeccompKind
from runtime.errors import FailedPrecondition
from runtime.oci.mounts import PROPAGATION_OPTIONS
from runtime.pods.model import Sandbox
from runtime.resources import Resources

from .proto import api_pb2

STATES = {
    ContainerState.CREATING: api_pb2.CONTAINER_UNKNOWN,
    ContainerState.CREATED: api_pb2.CONTAINER_CREATED,
    ContainerState.RUNNING: api_pb2.CONTAINER_RUNNING,
    ContainerState.EXITED: api_pb2.CONTAINER_STOPPED,
    ContainerState.UNKNOWN: api_pb2.CONTAINER_UNKNOWN,
}
SECCOMP_PROFILES = {
    SeccompKind.RUNTIME_DEFAULT: api_pb2.SecurityProfile.RUNTIME_DEFAULT,
    SeccompKind.UNCONFINED: api_pb2.SecurityProfile.UNCONFINED,
    SeccompKind.LOCALHOST: api_pb2.SecurityProfile.LOCALHOST,
}
# Sandbox.pins kinds -> OCI namespace types.
PIN_NAMESPACES = {"net": "network", "ipc": "ipc", "uts": "uts", "user": "user"}
HOOK_KINDS = {
    "prestart": "prestart",
    "createRuntime": "create_runtime",
    "createContainer": "create_container",
    "startContainer": "start_container",
    "poststart": "poststart",
    "poststop": "poststop",
}


class UnrepresentableResources(FailedPrecondition):
    """NRI resources that Moorage's Resources (the CRI's LinuxContainerResources) cannot hold."""


def is_set(message: Message, name: str) -> bool:
    """HasField of a field named at run time (the generated stubs want a literal name)."""
    return message.HasField(name)


def pod_sandbox(sandbox: Sandbox) -> api_pb2.PodSandbox:
    config = sandbox.config
    pod = api_pb2.PodSandbox(
        id=sandbox.id,
        name=config.metadata.name,
        uid=config.metadata.uid,
        namespace=config.metadata.namespace,
        labels=config.labels,
        annotations=config.annotations,
        runtime_handler=sandbox.runtime_handler,
        pid=sandbox.infra.pid if sandbox.infra else 0,
        ips=sandbox.ips,
    )
    linux = pod.linux
    linux.cgroup_parent = config.cgroup_parent
    linux.cgroups_path = sandbox.cgroup_path
    for kind, path in sorted(sandbox.pins.items()):
        if kind in PIN_NAMESPACES:
            linux.namespaces.add(type=PIN_NAMESPACES[kind], path=path)
    if sandbox.resources is not None:
        linux.pod_resources.CopyFrom(resources_to_nri(sandbox.resources.resources))
        linux.pod_overhead.CopyFrom(resources_to_nri(sandbox.resources.overhead))
    return pod


def container(container: Container, spec: Mapping[str, Any] | None = None) -> api_pb2.Container:
    """`container` as NRI sees it; `spec` is its OCI spec when built (CreateContainer's
    request), else the CRI config stands in for what only the spec knows."""
    config = container.config
    nri = api_pb2.Container(
        id=container.id,
        pod_sandbox_id=container.sandbox_id,
        name=config.name,
        state=STATES[container.state],
        labels=config.labels,
        pid=container.pid,
        created_at=container.created_at_ns,
        started_at=container.started_at_ns,
        finished_at=container.finished_at_ns,
        exit_code=container.exit_code,
        status_reason=container.reason,
        status_message=container.message,
    )
    nri.image.name = config.image
    # image_ref is "repository@sha256:…": the manifest (or index) digest the image came by.
    nri.image.digest = container.image_ref.rpartition("@")[2]
    nri.image.config_digest = container.image_id
    if container.user is not None:
        nri.user.uid = container.user.uid
        nri.user.gid = container.user.gid
        nri.user.additional_gids.extend(container.user.additional_gids)
    linux = nri.linux
    if (seccomp := config.security.seccomp.kind) is not None:
        linux.seccomp_profile.profile_type = SECCOMP_PROFILES[seccomp]
        linux.seccomp_profile.localhost_ref = config.security.seccomp.localhost_path
    if spec is None:
        nri.annotations.update(config.annotations)
        nri.args.extend([*config.command, *config.args])
        nri.env.extend(f"{name}={value}" for name, value in config.envs.items())
        for mount in config.mounts:
            access = "ro" if mount.readonly else "rw"
            options = ["rbind", PROPAGATION_OPTIONS[mount.propagation], access]
            nri.mounts.add(
                destination=mount.container_path,
                type="bind",
                source=mount.host_path,
                options=[*options, *mount.mount_options],
            )
        linux.resources.CopyFrom(resources_to_nri(container.resources))
        linux.oom_score_adj.value = container.resources.oom_score_adj
        return nri
    _from_spec(nri, spec)
    return nri


def _from_spec(nri: api_pb2.Container, spec: Mapping[str, Any]) -> None:
    process = spec.get("process", {})
    oci_linux = spec.get("linux", {})
    nri.annotations.update(spec.get("annotations", {}))
    nri.args.extend(process.get("args", []))
    nri.env.extend(process.get("env", []))
    for mount in spec.get("mounts", []):
        nri.mounts.add(
            destination=mount["destination"],
            type=mount.get("type", ""),
            source=mount.get("source", ""),
            options=mount.get("options", []),
        )
    for oci_kind, kind in HOOK_KINDS.items():
        for hook in spec.get("hooks", {}).get(oci_kind, []):
            nri_hook = getattr(nri.hooks, kind).add(
                path=hook["path"], args=hook.get("args", []), env=hook.get("env", [])
            )
            if "timeout" in hook:
                nri_hook.timeout.value = hook["timeout"]
    for rlimit in process.get("rlimits", []):
        nri.rlimits.add(type=rlimit["type"], hard=rlimit["hard"], soft=rlimit["soft"])
    if "user" in process:
        user = process["user"]
        nri.user.uid = user.get("uid", 0)
        nri.user.gid = user.get("gid", 0)
        del nri.user.additional_gids[:]
        nri.user.additional_gids.extend(user.get("additionalGids", []))
    linux = nri.linux
    for namespace in oci_linux.get("namespaces", []):
        linux.namespaces.add(type=namespace["type"], path=namespace.get("path", ""))
    for device in oci_linux.get("devices", []):
        nri_device = linux.devices.add(
            path=device["path"],
            type=device["type"],
            major=device.get("major", 0),
            minor=device.get("minor", 0),
        )
        for key, wrapper in (
            ("fileMode", nri_device.file_mode),
            ("uid", nri_device.uid),
            ("gid", nri_device.gid),
        ):
            if key in device:
                wrapper.value = device[key]
    linux.resources.CopyFrom(oci_resources_to_nri(oci_linux.get("resources", {})))
    if "oomScoreAdj" in process:
        linux.oom_score_adj.value = process["oomScoreAdj"]
    linux.cgroups_path = oci_linux.get("cgroupsPath", "")
    linux.sysctl.update(oci_linux.get("sysctl", {}))
    if "seccomp" in oci_linux:
        linux.seccomp_policy.CopyFrom(seccomp_to_nri(oci_linux["seccomp"]))


def resources_to_nri(resources: Resources) -> api_pb2.LinuxResources:
    """The set fields of `resources` (0 and "" are unset); oom_score_adj is not a resource
    in NRI, it is LinuxContainer's."""
    nri = api_pb2.LinuxResources()
    r = resources
    for value, wrapper in (
        (r.cpu_shares, nri.cpu.shares),
        (r.cpu_quota, nri.cpu.quota),
        (r.cpu_period, nri.cpu.period),
        (r.memory_limit_bytes, nri.memory.limit),
        (r.memory_swap_limit_bytes, nri.memory.swap),
    ):
        if value:
            wrapper.value = value
    nri.cpu.cpus = r.cpuset_cpus
    nri.cpu.mems = r.cpuset_mems
    for size, limit in sorted(r.hugepage_limits.items()):
        nri.hugepage_limits.add(page_size=size, limit=limit)
    nri.unified.update(r.unified)
    return nri


def resource_fields(nri: api_pb2.LinuxResources) -> dict[str, Any]:
    """The Resources fields `nri` sets, by name; UnrepresentableResources for any set field
    the CRI's resources have no place for (the OCI spec takes them, see apply.py)."""
    if unrepresentable := _unrepresentable(nri):
        raise UnrepresentableResources(
            f"NRI resources {', '.join(unrepresentable)} cannot be applied to a container's "
            "CRI resources: Moorage's model has no such fields"
        )
    fields: dict[str, Any] = {}
    for name, message, wrapper in (
        ("cpu_shares", nri.cpu, "shares"),
        ("cpu_quota", nri.cpu, "quota"),
        ("cpu_period", nri.cpu, "period"),
        ("memory_limit_bytes", nri.memory, "limit"),
        ("memory_swap_limit_bytes", nri.memory, "swap"),
    ):
        if is_set(message, wrapper):
            fields[name] = getattr(message, wrapper).value
    if nri.cpu.cpus:
        fields["cpuset_cpus"] = nri.cpu.cpus
    if nri.cpu.mems:
        fields["cpuset_mems"] = nri.cpu.mems
    if nri.hugepage_limits:
        fields["hugepage_limits"] = {h.page_size: h.limit for h in nri.hugepage_limits}
    if nri.unified:
        fields["unified"] = dict(nri.unified)
    return fields


def resources_from_nri(nri: api_pb2.LinuxResources) -> Resources:
    return Resources(**resource_fields(nri))


def _unrepresentable(nri: api_pb2.LinuxResources) -> list[str]:
    names = [
        f"memory.{name}"
        for name in (
            "reservation",
            "kernel",
            "kernel_tcp",
            "swappiness",
            "disable_oom_killer",
            "use_hierarchy",
        )
        if is_set(nri.memory, name)
    ]
    names += [f"cpu.{n}" for n in ("realtime_runtime", "realtime_period") if is_set(nri.cpu, n)]
    names += [name for name in ("blockio_class", "rdt_class", "pids") if is_set(nri, name)]
    if nri.devices:
        names.append("devices")
    return names


def oci_resources_to_nri(oci: Mapping[str, Any]) -> api_pb2.LinuxResources:
    """An OCI spec's linux.resources (the shape oci/spec.py builds) as NRI's."""
    nri = api_pb2.LinuxResources()
    cpu, memory = oci.get("cpu", {}), oci.get("memory", {})
    for source, key, wrapper in (
        (cpu, "shares", nri.cpu.shares),
        (cpu, "quota", nri.cpu.quota),
        (cpu, "period", nri.cpu.period),
        (cpu, "realtimeRuntime", nri.cpu.realtime_runtime),
        (cpu, "realtimePeriod", nri.cpu.realtime_period),
        (memory, "limit", nri.memory.limit),
        (memory, "reservation", nri.memory.reservation),
        (memory, "swap", nri.memory.swap),
        (memory, "kernel", nri.memory.kernel),
        (memory, "kernelTCP", nri.memory.kernel_tcp),
        (memory, "swappiness", nri.memory.swappiness),
        (memory, "disableOOMKiller", nri.memory.disable_oom_killer),
        (memory, "useHierarchy", nri.memory.use_hierarchy),
    ):
        if key in source:
            wrapper.value = source[key]
    nri.cpu.cpus = cpu.get("cpus", "")
    nri.cpu.mems = cpu.get("mems", "")
    for limit in oci.get("hugepageLimits", []):
        nri.hugepage_limits.add(page_size=limit["pageSize"], limit=limit["limit"])
    nri.unified.update(oci.get("unified", {}))
    if "pids" in oci:
        nri.pids.limit = oci["pids"].get("limit", 0)
    for rule in oci.get("devices", []):
        nri_rule = nri.devices.add(
            allow=rule["allow"], type=rule.get("type", ""), access=rule.get("access", "")
        )
        for key, wrapper in (("major", nri_rule.major), ("minor", nri_rule.minor)):
            if key in rule:
                wrapper.value = rule[key]
    return nri


def seccomp_to_nri(oci: Mapping[str, Any]) -> api_pb2.LinuxSeccomp:
    nri = api_pb2.LinuxSeccomp(
        default_action=oci.get("defaultAction", ""),
        architectures=oci.get("architectures", []),
        flags=oci.get("flags", []),
        listener_path=oci.get("listenerPath", ""),
        listener_metadata=oci.get("listenerMetadata", ""),
    )
    if "defaultErrnoRet" in oci:
        nri.default_errno.value = oci["defaultErrnoRet"]
    for rule in oci.get("syscalls", []):
        syscall = nri.syscalls.add(names=rule["names"], action=rule["action"])
        if "errnoRet" in rule:
            syscall.errno_ret.value = rule["errnoRet"]
        for arg in rule.get("args", []):
            syscall.args.add(
                index=arg["index"],
                value=arg.get("value", 0),
                value_two=arg.get("valueTwo", 0),
                op=arg["op"],
            )
    return nri


def seccomp_to_oci(nri: api_pb2.LinuxSeccomp) -> dict[str, Any]:
    oci: dict[str, Any] = {
        "defaultAction": nri.default_action,
        "architectures": list(nri.architectures),
    }
    if nri.HasField("default_errno"):
        oci["defaultErrnoRet"] = nri.default_errno.value
    for key, value in (
        ("flags", list(nri.flags)),
        ("listenerPath", nri.listener_path),
        ("listenerMetadata", nri.listener_metadata),
    ):
        if value:
            oci[key] = value
    syscalls = []
    for rule in nri.syscalls:
        syscall: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.HasField("errno_ret"):
            syscall["errnoRet"] = rule.errno_ret.value
        if rule.args:
            syscall["args"] = [
                {"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}
                for a in rule.args
            ]
        syscalls.append(syscall)
    oci["syscalls"] = syscalls
    return oci
