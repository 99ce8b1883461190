"""Everything CreateContainer prepares before conmon runs: request checks, the rootfs, the
resolved user and the OCI spec in the bundle. Blocking; a failure leaves no files behind."""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.containers.bundle import (
    container_cgroup_path,
    mount_rootfs,
    remove_files,
    write_spec,
)
from runtime.containers.executable import check_command
from runtime.containers.image_user import resolve_user
from runtime.containers.model import (
    Container,
    ContainerConfig,
    ContainerState,
    ImageRuntimeConfig,
    ProcessUser,
    SeccompKind,
)
from runtime.containers.overlay import bind_staged, mount_overlay
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.host.cgroups import CgroupLayout
from runtime.oci.env_exec import deliver_raw_env
from runtime.oci.seccomp import load_profile
from runtime.oci.seccomp_bpf import SeccompFilters
from runtime.oci.spec import SpecInputs, build_spec, prepare_mount_sources
from runtime.pods.model import Sandbox, UserNamespace
from runtime.resource_limits import check_resources
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore


@dataclass(frozen=True)
class BuiltContainer:
    user: ProcessUser
    spec: dict[str, Any]


class ContainerBuilder:
    def __init__(
        self, settings: RuntimeSettings, cgroups: CgroupLayout, store: ContainerStore
    ) -> None:
        self.settings = settings
        self.cgroups = cgroups
        self.store = store
        self._seccomp_default: dict[str, Any] | None = None

    def build(  # noqa: PLR0917
        self,
        container: Container,
        sandbox: Sandbox,
        image_config: ImageRuntimeConfig,
        lowers: list[Path],
        filters: SeccompFilters | None,
        volumes: dict[int, list[Path]],
    ) -> BuiltContainer:
        """volumes: index in config.mounts of each image volume -> that image's lower dirs."""
        paths = self.settings.layout.container(container.id)
        userns = user_namespace_of(container.config, sandbox)
        idmap = Path(sandbox.pins["user"]) if userns is not None else None
        mount_rootfs(paths, lowers, userns, idmap)
        try:
            config = _with_volumes(container.config, volumes, paths.volumes, idmap)
            user = resolve_user(paths.rootfs, config.security, image_config.user)
            prepare_mount_sources(config)
            config = _with_staged_mounts(config, paths.volumes, idmap)
            if container.log_path:
                Path(container.log_path).parent.mkdir(parents=True, exist_ok=True)
            spec = build_spec(
                SpecInputs(
                    container_id=container.id,
                    config=config,
                    image=image_config,
                    user=user,
                    rootfs=str(paths.rootfs),
                    sandbox=sandbox,
                    cgroups_path=container_cgroup_path(sandbox.cgroup_path, container.id),
                    seccomp_profile=self._seccomp(config),
                    oom_score_adj_min=own_oom_score_adj(),
                    target_pid=self._target_pid(config),
                    cgroup_v2=self.cgroups.unified_root is not None and not self.cgroups.v1_roots,
                )
            )
            process = spec["process"]
            check_command(
                paths.rootfs,
                process["args"],
                env=process.get("env", []),
                cwd=process.get("cwd", "/"),
                mounts=config.mounts,
                image=config.image,
            )
            # After the check: it looks for the command itself, not for env-exec before it.
            deliver_raw_env(spec, self.settings.env_exec_path)
            if filters is not None:
                filters.annotate(spec)
            write_spec(paths, spec)
        except BaseException:
            remove_files(paths)
            raise
        return BuiltContainer(user, spec)

    def _seccomp(self, config: ContainerConfig) -> dict[str, Any] | None:
        seccomp = config.security.seccomp
        kind = seccomp.kind or self.settings.default_seccomp
        if config.security.privileged or kind is SeccompKind.UNCONFINED:
            return None
        if seccomp.kind is SeccompKind.LOCALHOST:
            try:
                return load_profile(Path(seccomp.localhost_path))
            except OSError as exc:
                raise InvalidArgument(
                    f"seccomp profile {seccomp.localhost_path!r}: {exc.strerror}"
                ) from None
        if self._seccomp_default is None:
            self._seccomp_default = load_profile(self.settings.seccomp_profile)
        return self._seccomp_default

    def _target_pid(self, config: ContainerConfig) -> int | None:
        target_id = config.security.namespaces.target_id
        if not target_id:
            return None
        target = self.store.find(target_id)
        if target is None or target.state is not ContainerState.RUNNING:
            raise NotFound(f"target container {target_id!r} of the PID namespace is not running")
        return target.pid


def user_namespace_of(config: ContainerConfig, sandbox: Sandbox) -> UserNamespace | None:
    """The pod's user namespace, which the container must not ask to change; its idmapped
    mounts must use the same mapping, the only one Moorage can idmap with."""
    pod = sandbox.config.namespaces.user
    asked = config.security.namespaces.user
    if asked is not None and asked != pod:
        raise InvalidArgument(
            "config.linux.security_context.namespace_options.userns_options differs from the "
            f"pod's: a container shares its pod's user namespace ({_describe(pod)})"
        )
    for index, mount in enumerate(config.mounts):
        if mount.idmap is not None and mount.idmap != pod:
            raise InvalidArgument(
                f"config.mounts[{index}] uid/gid mappings must be the pod's ({_describe(pod)})"
            )
    if pod is not None and "user" not in sandbox.pins:
        raise FailedPrecondition(f"pod sandbox {sandbox.id} has no user namespace left")
    return pod


def _describe(userns: UserNamespace | None) -> str:
    if userns is None:
        return "the node's"
    uids, gids = userns.uids, userns.gids
    return f"uids 0->{uids.host_id}+{uids.length}, gids 0->{gids.host_id}+{gids.length}"


def _with_volumes(
    config: ContainerConfig, volumes: dict[int, list[Path]], directory: Path, idmap: Path | None
) -> ContainerConfig:
    """Mount each image volume read-only and point its mount at it (or at its sub path)."""
    mounts = list(config.mounts)
    for index, image_lowers in volumes.items():
        target = directory / str(index)
        target.mkdir(parents=True)
        mount_overlay(image_lowers, None, None, target, idmap)
        mount = mounts[index]
        source = target
        if mount.image_sub_path:
            source = (target / mount.image_sub_path.lstrip("/")).resolve()
            if not source.is_relative_to(target.resolve()) or not source.exists():
                raise InvalidArgument(
                    f"config.mounts[{index}].image_sub_path {mount.image_sub_path!r} "
                    f"is not in image {mount.image}"
                )
        mounts[index] = replace(mount, host_path=str(source), readonly=True)
    return replace(config, mounts=mounts)


def _with_staged_mounts(
    config: ContainerConfig, directory: Path, idmap: Path | None
) -> ContainerConfig:
    """Stage each recursively read-only or idmapped host mount as a copy of its whole tree
    with those attributes; the runtime's bind of that copy keeps them on every submount."""
    mounts = list(config.mounts)
    for index, mount in enumerate(mounts):
        idmapped = mount.idmap is not None
        if mount.image or not (mount.recursive_read_only or idmapped):
            continue
        target = directory / f"staged-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        # A bind's target must be of the source's kind: a directory or a file.
        if os.path.isdir(mount.host_path):
            target.mkdir()
        else:
            target.touch()
        try:
            bind_staged(
                Path(mount.host_path),
                target,
                recursive_read_only=mount.recursive_read_only,
                idmap_userns=idmap if idmapped else None,
            )
        except OSError as exc:
            raise FailedPrecondition(
                f"config.mounts[{index}]: cannot mount {mount.host_path!r} "
                f"{'idmapped' if idmapped else 'recursively read-only'}: {exc.strerror}"
            ) from None
        mounts[index] = replace(mount, host_path=str(target))
    return replace(config, mounts=mounts)


def validate(config: ContainerConfig) -> None:
    _check_mac(config)
    if not config.name:
        raise InvalidArgument("config.metadata.name is empty")
    if not config.image:
        raise InvalidArgument("config.image.image is empty")
    check_resources(config.resources, "config.linux.resources")
    security = config.security
    for name, value in (
        ("run_as_user", security.run_as_user),
        ("run_as_group", security.run_as_group),
    ):
        if value is not None and value < 0:
            raise InvalidArgument(f"config.linux.security_context.{name} {value} is negative")
    if negative := [g for g in security.supplemental_groups if g < 0]:
        raise InvalidArgument(
            f"config.linux.security_context.supplemental_groups holds {negative[0]}, a negative gid"
        )
    if config.log_path:
        path = PurePosixPath(config.log_path)
        if path.is_absolute() or ".." in path.parts:
            raise InvalidArgument(
                f"config.log_path {config.log_path!r} must stay inside the pod's log directory"
            )


def _check_mac(config: ContainerConfig) -> None:
    """AppArmor and SELinux requests this host cannot honour fail rather than run weaker."""
    security = config.security
    profile = security.apparmor_profile
    if profile not in ("", "unconfined") and not _apparmor_enabled():
        raise FailedPrecondition(
            f"AppArmor profile {profile!r} asked for, but AppArmor is not enabled on this host"
        )
    if profile not in ("", "unconfined"):
        raise FailedPrecondition(f"AppArmor profile {profile!r}: Moorage does not apply them yet")
    if security.selinux_labelled and _selinux_enabled():
        raise FailedPrecondition("SELinux options asked for: Moorage does not label containers")


def _apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


def _selinux_enabled() -> bool:
    return Path("/sys/fs/selinux/enforce").exists()


def log_path(sandbox: Sandbox, config: ContainerConfig) -> str:
    if not config.log_path or not sandbox.config.log_directory:
        return ""
    return os.path.join(sandbox.config.log_directory, config.log_path)


_REALTIME = re.compile(r"SIGRT(MIN|MAX)(?:([+-]|PLUS|MINUS)(\d+))?$")


def signal_number(name: str) -> int:
    """A StopSignal as images write it ("SIGINT", "INT", "2", "SIGRTMIN+3"), or as agents
    before the CRI's enum rename stored it ("SIGRTMINPLUS3"); SIGTERM if unset or unknown."""
    if not name:
        return signal.SIGTERM
    text = name.upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    realtime = _REALTIME.match(text)
    if realtime:
        base = signal.SIGRTMIN if realtime[1] == "MIN" else signal.SIGRTMAX
        offset = int(realtime[3] or 0)
        return int(base + offset if realtime[2] in ("+", "PLUS") else base - offset)
    try:
        return int(signal.Signals[text])
    except KeyError:
        return signal.SIGTERM


def own_oom_score_adj() -> int:
    """The lowest oom_score_adj a container may get: without CAP_SYS_RESOURCE the kernel
    refuses anything below the agent's own."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())
    except OSError:
        return 0
