"""A merged NRI adjustment applied to a container's OCI spec, and NRI resource updates to
Moorage's resources model: what containerd/nri's pkg/runtime-tools/generate does for
containerd, on the plain dict runtime/oci/spec.py builds.

Fields that the OCI spec Moorage writes (version OCI_VERSION) has no place for, or that need
host configuration Moorage lacks (RDT and block I/O classes, a CDI registry), are refused with
UnsupportedAdjustment rather than ignored: upstream ignores some silently when the runtime
did not configure them, and runtimes of that spec version ignore unknown fields, so the
container would run without what a plugin asked for and nobody would know.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from runtime.errors import FailedPrecondition
from runtime.oci.spec import OCI_VERSION
from runtime.resources import Resources

from .adjust import marked_for_removal
from .model import is_set, resource_fields, seccomp_to_oci
from .proto import api_pb2

HOOK_KINDS = {
    "prestart": "prestart",
    "create_runtime": "createRuntime",
    "create_container": "createContainer",
    "start_container": "startContainer",
    "poststart": "poststart",
    "poststop": "poststop",
}
# NRI field -> OCI key, in resources.cpu and resources.memory.
CPU_KEYS = {
    "shares": "shares",
    "quota": "quota",
    "period": "period",
    "realtime_runtime": "realtimeRuntime",
    "realtime_period": "realtimePeriod",
}
MEMORY_KEYS = {
    "limit": "limit",
    "reservation": "reservation",
    "swap": "swap",
    "kernel": "kernel",
    "kernel_tcp": "kernelTCP",
    "swappiness": "swappiness",
    "disable_oom_killer": "disableOOMKiller",
    "use_hierarchy": "useHierarchy",
}
NEWER_SPEC = f"is not in the OCI spec Moorage writes ({OCI_VERSION}); its runtimes would ignore it"


class UnsupportedAdjustment(FailedPrecondition):
    """An adjustment this node cannot make: the container would run without it."""


def apply_adjustment(
    spec: dict[str, Any], adjustment: api_pb2.ContainerAdjustment
) -> dict[str, Any]:
    """A copy of `spec` adjusted; `spec` itself is left as it was (a validator may still
    reject the adjustment)."""
    _refuse_unsupported(adjustment)
    adjusted = copy.deepcopy(spec)
    process = adjusted.setdefault("process", {})
    linux = adjusted.setdefault("linux", {})
    _adjust_map(adjusted, "annotations", dict(adjustment.annotations))
    _adjust_env(process, adjustment.env)
    if adjustment.args:
        process["args"] = list(adjustment.args)
    _adjust_hooks(adjusted, adjustment.hooks)
    nri_linux = adjustment.linux
    _adjust_devices(linux, nri_linux.devices)
    if nri_linux.cgroups_path:
        linux["cgroupsPath"] = nri_linux.cgroups_path
    if nri_linux.HasField("oom_score_adj"):
        process["oomScoreAdj"] = nri_linux.oom_score_adj.value
    if nri_linux.HasField("seccomp_policy"):
        linux["seccomp"] = seccomp_to_oci(nri_linux.seccomp_policy)
    _adjust_namespaces(linux, nri_linux.namespaces)
    _adjust_map(linux, "sysctl", dict(nri_linux.sysctl))
    _adjust_resources(linux, nri_linux.resources)
    if nri_linux.rdt.remove:
        linux.pop("intelRdt", None)
    _adjust_mounts(adjusted, adjustment.mounts)
    _adjust_rlimits(process, adjustment.rlimits)
    return adjusted


def update_resources(current: Resources, update: api_pb2.LinuxResources) -> Resources:
    """`current` with what `update` sets: hugepage limits and unified entries by key, the
    rest replaced. UnrepresentableResources for fields the CRI's resources cannot hold."""
    fields = resource_fields(update)
    if "hugepage_limits" in fields:
        fields["hugepage_limits"] = {**current.hugepage_limits, **fields["hugepage_limits"]}
    if "unified" in fields:
        fields["unified"] = {**current.unified, **fields["unified"]}
    return replace(current, **fields)


def _refuse_unsupported(adjustment: api_pb2.ContainerAdjustment) -> None:
    linux, resources = adjustment.linux, adjustment.linux.resources
    reasons = []
    if adjustment.CDI_devices:
        names = ", ".join(d.name for d in adjustment.CDI_devices)
        reasons.append(f"CDI devices ({names}): Moorage has no CDI registry to resolve them")
    for name, oci in (
        ("io_priority", "process.ioPriority"),
        ("scheduler", "process.scheduler"),
        ("memory_policy", "linux.memoryPolicy"),
    ):
        if is_set(linux, name):
            reasons.append(f"linux.{name}: {oci} {NEWER_SPEC}")
    # Removing a net device (or RDT) the spec does not have is no change.
    if [key for key in linux.net_devices if not marked_for_removal(key)[1]]:
        reasons.append(f"linux.net_devices: linux.netDevices {NEWER_SPEC}")
    rdt = linux.rdt
    if any(is_set(rdt, name) for name in ("clos_id", "schemata", "enable_monitoring")):
        reasons.append("linux.rdt: Moorage does not manage resctrl (RDT) classes")
    for name, what in (("rdt_class", "RDT"), ("blockio_class", "block I/O")):
        if is_set(resources, name) and getattr(resources, name).value:
            value = getattr(resources, name).value
            reasons.append(
                f"linux.resources.{name} {value!r}: Moorage has no {what} classes configured"
            )
    if reasons:
        raise UnsupportedAdjustment("NRI adjustment refused: " + "; ".join(reasons))


def _adjust_map(parent: dict[str, Any], key: str, adjustment: dict[str, str]) -> None:
    """Annotations, sysctl: removals first, so a removal and a setting of one key sets it."""
    if not adjustment:
        return
    target = parent.setdefault(key, {})
    for marked_key in adjustment:
        name, marked = marked_for_removal(marked_key)
        if marked:
            target.pop(name, None)
    for name, value in adjustment.items():
        if not marked_for_removal(name)[1]:
            target[name] = value


def _adjust_env(process: dict[str, Any], env: Sequence[api_pb2.KeyValue]) -> None:
    """Upstream's order: a variable set again keeps its place, a new one goes last."""
    if not env:
        return
    changes = {marked_for_removal(e.key)[0]: e for e in env}
    adjusted = []
    for entry in process.get("env", []):
        name, _, _ = entry.partition("=")
        change = changes.pop(name, None)
        if change is None:
            adjusted.append(entry)
        elif not marked_for_removal(change.key)[1]:
            adjusted.append(f"{change.key}={change.value}")
    adjusted += [f"{e.key}={e.value}" for e in changes.values() if not marked_for_removal(e.key)[1]]
    process["env"] = adjusted


def _adjust_hooks(spec: dict[str, Any], hooks: api_pb2.Hooks) -> None:
    for kind, oci_kind in HOOK_KINDS.items():
        for hook in getattr(hooks, kind):
            oci: dict[str, Any] = {"path": hook.path}
            if hook.args:
                oci["args"] = list(hook.args)
            if hook.env:
                oci["env"] = list(hook.env)
            if hook.HasField("timeout"):
                oci["timeout"] = hook.timeout.value
            spec.setdefault("hooks", {}).setdefault(oci_kind, []).append(oci)


def _adjust_devices(linux: dict[str, Any], devices: Sequence[api_pb2.LinuxDevice]) -> None:
    """A device is created and allowed, as containerd does; a removed one keeps its rule."""
    for device in devices:
        path, marked = marked_for_removal(device.path)
        linux["devices"] = [d for d in linux.get("devices", []) if d["path"] != path]
        if marked:
            continue
        node: dict[str, Any] = {
            "path": device.path,
            "type": device.type,
            "major": device.major,
            "minor": device.minor,
        }
        for name, key in (("file_mode", "fileMode"), ("uid", "uid"), ("gid", "gid")):
            if is_set(device, name):
                node[key] = getattr(device, name).value
        linux["devices"].append(node)
        # Upstream's access: read and write, and mknod for block devices only.
        access = "rwm" if device.type == "b" else "rw"
        resources = linux.setdefault("resources", {})
        resources.setdefault("devices", []).append(
            {
                "allow": True,
                "type": device.type,
                "major": device.major,
                "minor": device.minor,
                "access": access,
            }
        )


def _adjust_namespaces(linux: dict[str, Any], namespaces: Sequence[api_pb2.LinuxNamespace]) -> None:
    for namespace in namespaces:
        kind, marked = marked_for_removal(namespace.type)
        kept = [n for n in linux.get("namespaces", []) if n["type"] != kind]
        if not marked:
            oci = {"type": kind}
            if namespace.path:
                oci["path"] = namespace.path
            kept.append(oci)
        linux["namespaces"] = kept


def _adjust_resources(linux: dict[str, Any], nri: api_pb2.LinuxResources) -> None:
    resources = linux.setdefault("resources", {})
    for nri_part, oci_key, keys in (
        (nri.cpu, "cpu", CPU_KEYS),
        (nri.memory, "memory", MEMORY_KEYS),
    ):
        for name, key in keys.items():
            if is_set(nri_part, name):
                resources.setdefault(oci_key, {})[key] = getattr(nri_part, name).value
    for name in ("cpus", "mems"):
        if value := getattr(nri.cpu, name):
            resources.setdefault("cpu", {})[name] = value
    # Upstream's: a memory limit without a swap limit allows no swap beyond it.
    if nri.memory.HasField("limit") and not nri.memory.HasField("swap"):
        resources["memory"]["swap"] = nri.memory.limit.value
    if nri.hugepage_limits:
        sizes = {h.page_size for h in nri.hugepage_limits}
        kept = [h for h in resources.get("hugepageLimits", []) if h["pageSize"] not in sizes]
        added = [{"pageSize": h.page_size, "limit": h.limit} for h in nri.hugepage_limits]
        resources["hugepageLimits"] = kept + added
    if nri.unified:
        resources.setdefault("unified", {}).update(nri.unified)
    if nri.HasField("pids"):
        resources["pids"] = {"limit": nri.pids.limit}
    for rule in nri.devices:
        oci_rule: dict[str, Any] = {"allow": rule.allow, "access": rule.access}
        if rule.type:
            oci_rule["type"] = rule.type
        for name in ("major", "minor"):
            if is_set(rule, name):
                oci_rule[name] = getattr(rule, name).value
        resources.setdefault("devices", []).append(oci_rule)
    # An empty class clears the block I/O settings (a named one was refused).
    if nri.HasField("blockio_class"):
        resources.pop("blockIO", None)


def _adjust_mounts(spec: dict[str, Any], mounts: Sequence[api_pb2.Mount]) -> None:
    if not mounts:
        return
    linux = spec["linux"]
    for mount in mounts:
        destination, marked = marked_for_removal(mount.destination)
        spec["mounts"] = [m for m in spec.get("mounts", []) if m["destination"] != destination]
        if marked:
            continue
        options = list(mount.options)
        # As upstream: a shared or slave mount needs the rootfs to propagate as much.
        if "rshared" in options:
            linux["rootfsPropagation"] = "rshared"
        elif "rslave" in options and linux.get("rootfsPropagation") not in ("rshared", "rslave"):
            linux["rootfsPropagation"] = "rslave"
        spec["mounts"].append(
            {
                "destination": mount.destination,
                "type": mount.type,
                "source": mount.source,
                "options": options,
            }
        )
    spec["mounts"].sort(key=_mount_order)


def _mount_order(mount: dict[str, Any]) -> tuple[int, str]:
    """Upstream's (and CRI-O's, Docker's) order: parents before children, then by name."""
    destination = mount["destination"]
    return os.path.normpath(destination).count("/"), destination


def _adjust_rlimits(process: dict[str, Any], rlimits: Sequence[api_pb2.POSIXRlimit]) -> None:
    """Unlike upstream, which appends, an rlimit replaces the spec's of its type."""
    for rlimit in rlimits:
        kept = [r for r in process.get("rlimits", []) if r["type"] != rlimit.type]
        kept.append({"type": rlimit.type, "hard": rlimit.hard, "soft": rlimit.soft})
        process["rlimits"] = kept
