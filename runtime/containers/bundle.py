"""A container's files on the host: the overlay rootfs and the OCI bundle. Plain blocking
functions; the teardown is idempotent, as recovery calls it on half-built containers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from runtime.containers.overlay import mount_overlay, unmount
from runtime.layout import ContainerPaths
from runtime.oci.env_exec import with_command
from runtime.pods.model import UserNamespace


def mount_rootfs(
    paths: ContainerPaths,
    lowers: list[Path],
    userns: UserNamespace | None = None,
    idmap: Path | None = None,
) -> None:
    """The bundle dir and the writable overlay over the image's layers; undone on failure.

    In a user namespace (userns, pinned at idmap) the layers are idmapped, so root's files
    are the container root's; the upper dir, whose owner the merged root shows, is owned by
    the container's root too.
    """
    with ExitStack() as undo:
        paths.bundle.mkdir(parents=True, mode=0o700)
        undo.callback(shutil.rmtree, paths.bundle, ignore_errors=True)
        # The merged root takes the upper dir's mode: it must not be the bundle's 0700.
        paths.upper.mkdir(mode=0o755)
        paths.work.mkdir(mode=0o700)
        if userns is not None:
            os.chown(paths.upper, userns.uids.host_id, userns.gids.host_id)
        paths.rootfs.mkdir(parents=True)
        undo.callback(shutil.rmtree, paths.rootfs.parent, ignore_errors=True)
        mount_overlay(lowers, paths.upper, paths.work, paths.rootfs, idmap)
        undo.pop_all()


def write_spec(paths: ContainerPaths, spec: dict[str, Any]) -> None:
    temporary = paths.config.with_name(paths.config.name + ".tmp")
    temporary.write_text(json.dumps(spec))
    os.replace(temporary, paths.config)


def read_spec(paths: ContainerPaths) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(paths.config.read_text())
    return spec


def update_spec_resources(paths: ContainerPaths, resources: dict[str, Any]) -> None:
    """Set fields of linux.resources replaced, the rest (devices among them) kept, as the
    runtime's `update` does for a container it runs."""
    spec = read_spec(paths)
    current = spec.setdefault("linux", {}).setdefault("resources", {})
    for name, value in resources.items():
        if isinstance(value, dict) and isinstance(current.get(name), dict):
            current[name].update(value)
        else:
            current[name] = value
    write_spec(paths, spec)


def release_volume_mounts(paths: ContainerPaths) -> None:
    """Detach the staged binds and image volumes from the host once the runtime's create has
    bound them into the container's mount namespace, which keeps its own copies. Left on the
    host, a staged copy of a host tree would pin it: the kubelet could not unmount or remove
    a volume under it while the pod runs."""
    with contextlib.suppress(FileNotFoundError):
        for volume in paths.volumes.iterdir():
            unmount(volume, detach=True)


def remove_files(paths: ContainerPaths) -> None:
    release_volume_mounts(paths)
    unmount(paths.rootfs)
    shutil.rmtree(paths.rootfs.parent, ignore_errors=True)
    shutil.rmtree(paths.bundle, ignore_errors=True)


def exec_process_spec(
    paths: ContainerPaths, command: list[str], *, tty: bool = False
) -> dict[str, Any]:
    """The container's own process settings (user, env, capabilities...) running command."""
    process = dict(read_spec(paths)["process"])
    process["args"] = with_command(process["args"], command)
    process["terminal"] = tty
    return process


def container_cgroup_path(sandbox_cgroup_path: str, container_id: str) -> str:
    return f"{sandbox_cgroup_path.rstrip('/')}/{container_id}"
