"""The mounts and devices of a container's OCI spec."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from runtime.containers.model import ContainerConfig, Device, Mount, Propagation
from runtime.errors import InvalidArgument
from runtime.pods.model import Sandbox

PROPAGATION_OPTIONS = {
    Propagation.PRIVATE: "rprivate",
    Propagation.HOST_TO_CONTAINER: "rslave",
    Propagation.BIDIRECTIONAL: "rshared",
}
# Major 136 holds the /dev/pts/N slaves.
PTS_MAJOR = 136
# containerd's device cgroup rules: nothing but these unless the pod asks.
DEFAULT_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # zero
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # full
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # random
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # urandom
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # tty
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # ptmx
    {"allow": True, "type": "c", "major": PTS_MAJOR, "access": "rwm"},  # pts/*
]


def default_mounts(privileged: bool, host_sysfs: bool = False) -> list[dict[str, Any]]:
    """containerd's default set; privileged containers may write /sys and the cgroupfs.

    With host_sysfs /sys is the node's, bound: a user namespace that owns no network namespace
    may not mount sysfs (crun falls back to a bind by itself, runc does not)."""
    sys_mode = "rw" if privileged else "ro"
    sys_options = ["nosuid", "noexec", "nodev", sys_mode]
    sysfs = (
        _mount("/sys", "bind", "/sys", ["rbind", "rprivate", *sys_options])
        if host_sysfs
        else _mount("/sys", "sysfs", "sysfs", sys_options)
    )
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        sysfs,
        _mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            ["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]


def pod_mounts(sandbox: Sandbox) -> list[dict[str, Any]]:
    """What the pod shares with each of its containers."""
    mounts = []
    if sandbox.resolv_conf_path:
        mounts.append(_bind("/etc/resolv.conf", sandbox.resolv_conf_path, readonly=True))
    if sandbox.shm_path:
        mounts.append(_bind("/dev/shm", sandbox.shm_path, readonly=False))
    else:
        mounts.append(
            _mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            )
        )
    return mounts


def user_mounts(config: ContainerConfig) -> list[dict[str, Any]]:
    """config.mounts as bind mounts, parents before children whatever the request's order."""
    for index, mount in enumerate(config.mounts):
        _check_paths(index, mount)
    ordered = sorted(config.mounts, key=lambda m: len(PurePosixPath(m.container_path).parts))
    return [
        _bind(
            m.container_path,
            m.host_path,
            m.readonly,
            PROPAGATION_OPTIONS[m.propagation],
            m.mount_options,
        )
        for m in ordered
    ]


def all_mounts(config: ContainerConfig, sandbox: Sandbox) -> list[dict[str, Any]]:
    """The defaults and the pod's mounts, except where the request mounts something itself."""
    requested = user_mounts(config)
    taken = {os.path.normpath(m["destination"]) for m in requested}
    privileged = config.security.privileged
    userns_on_host_network = (
        sandbox.config.namespaces.user is not None and "net" not in sandbox.pins
    )
    builtin = [*default_mounts(privileged, userns_on_host_network), *pod_mounts(sandbox)]
    return [m for m in builtin if m["destination"] not in taken] + requested


def rootfs_propagation(config: ContainerConfig) -> str:
    """A shared or slave mount needs the rootfs to propagate too, or the events stop there."""
    kinds = {m.propagation for m in config.mounts}
    if Propagation.BIDIRECTIONAL in kinds:
        return "rshared"
    if Propagation.HOST_TO_CONTAINER in kinds:
        return "rslave"
    return ""


def prepare_mount_sources(config: ContainerConfig) -> None:
    """Create missing host paths as directories, as kubelet's hostPath volumes expect, and
    check that propagating mounts sit on mounts that propagate."""
    for index, mount in enumerate(config.mounts):
        _check_paths(index, mount)
        if not os.path.exists(mount.host_path):
            try:
                os.makedirs(mount.host_path, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise InvalidArgument(
                    f"config.mounts[{index}].host_path {mount.host_path!r} cannot be created: "
                    f"{exc.strerror}"
                ) from None
        if mount.propagation is not Propagation.PRIVATE:
            _check_propagation(index, mount)


def _check_propagation(index: int, mount: Mount) -> None:
    """As containerd: bidirectional needs a shared mount under the host path, host-to-container
    a shared or slave one; otherwise nothing would ever propagate."""
    point, tags = _mount_of(os.path.realpath(mount.host_path))
    shared = any(t.startswith("shared:") for t in tags)
    slave = any(t.startswith("master:") for t in tags)
    if mount.propagation is Propagation.BIDIRECTIONAL and not shared:
        raise InvalidArgument(
            f"config.mounts[{index}]: host path {mount.host_path!r} is on mount {point!r}, "
            "which is not shared, so BIDIRECTIONAL propagation cannot work"
        )
    if mount.propagation is Propagation.HOST_TO_CONTAINER and not (shared or slave):
        raise InvalidArgument(
            f"config.mounts[{index}]: host path {mount.host_path!r} is on mount {point!r}, "
            "which is neither shared nor slave, so HOST_TO_CONTAINER propagation cannot work"
        )


def _mount_of(path: str) -> tuple[str, list[str]]:
    """The mount point holding path, and its optional propagation fields, from mountinfo."""
    best, tags = "/", []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split(" - ")[0].split()
            point = fields[4].replace("\\040", " ")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            # The last of equal mount points is the one on top.
            if inside and len(point) >= len(best):
                best, tags = point, fields[6:]
    return best, tags


def _check_paths(index: int, mount: Mount) -> None:
    if not mount.container_path.startswith("/"):
        raise InvalidArgument(
            f"config.mounts[{index}].container_path {mount.container_path!r} is not absolute"
        )
    if not mount.host_path.startswith("/"):
        raise InvalidArgument(
            f"config.mounts[{index}].host_path {mount.host_path!r} is not absolute"
        )


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


def _bind(
    destination: str,
    source: str,
    readonly: bool,
    propagation: str = "rprivate",
    flags: Sequence[str] = (),
) -> dict[str, Any]:
    # crun and runc remount the bind to set flags beyond ro: a bind ignores them otherwise.
    options = ["rbind", propagation, "ro" if readonly else "rw", *flags]
    return _mount(destination, "bind", source, options)


def devices(config: ContainerConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(linux.devices, linux.resources.devices) for the requested devices and the defaults."""
    if config.security.privileged:
        return [], [{"allow": True, "access": "rwm"}]
    nodes = []
    rules = [dict(rule) for rule in DEFAULT_DEVICE_RULES]
    for index, device in enumerate(config.devices):
        node = _device_node(index, device)
        nodes.append(node)
        rules.append(
            {
                "allow": True,
                "type": node["type"],
                "major": node["major"],
                "minor": node["minor"],
                "access": device.permissions,
            }
        )
    return nodes, rules


def _device_node(index: int, device: Device) -> dict[str, Any]:
    field = f"config.devices[{index}]"
    if not device.container_path.startswith("/"):
        raise InvalidArgument(f"{field}.container_path {device.container_path!r} is not absolute")
    if not device.permissions or set(device.permissions) - set("rwm"):
        raise InvalidArgument(
            f"{field}.permissions {device.permissions!r} must be made of 'r', 'w' and 'm'"
        )
    try:
        st = os.stat(device.host_path)
    except OSError as exc:
        raise InvalidArgument(f"{field}.host_path {device.host_path!r}: {exc.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise InvalidArgument(
            f"{field}.host_path {device.host_path!r} is not a character or block device"
        )
    return {
        "path": device.container_path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }
