"""Building and tearing down a pod sandbox's kernel objects: plain blocking functions.

build_sandbox registers the undo of every step as the step succeeds, so a failure anywhere
leaves nothing behind. The teardown functions are idempotent: recovery calls them on
half-built or already-stopped pods.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from network.netns import bring_up_loopback
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.host.cgroups import CgroupLayout
from runtime.host.namespaces import entered, pin_current, unpin, unshared
from runtime.host.processes import kill_and_wait, start_ticks
from runtime.pods.model import InfraProcess, NamespaceMode, NamespaceOptions, Sandbox
from runtime.pods.resolv import render_resolv_conf
from runtime.pods.shm import mount_shm, unmount_if_mounted
from runtime.pods.sysctls import apply_sysctls
from runtime.pods.userns import InfraRequest, create_owned_namespaces
from runtime.settings import RuntimeSettings

INFRA_MARKER = "MOORAGE_SANDBOX_ID"


@dataclass
class BuiltSandbox:
    pins: dict[str, str]
    infra: InfraProcess | None
    # Set only while this agent process is the infra's parent and must reap it.
    infra_child: subprocess.Popen[bytes] | None


def pod_namespace_kinds(ns: NamespaceOptions) -> list[str]:
    """Namespaces the pod gets of its own; the pod's UTS follows its network, as in kubelet."""
    kinds = []
    if ns.network is not NamespaceMode.NODE:
        kinds += ["net", "uts"]
    if ns.ipc is not NamespaceMode.NODE:
        kinds.append("ipc")
    return kinds


def build_sandbox(
    settings: RuntimeSettings,
    cgroups: CgroupLayout,
    sandbox: Sandbox,
    sysctl_paths: dict[str, str],
) -> BuiltSandbox:
    config = sandbox.config
    paths = settings.layout.sandbox(sandbox.id)
    with ExitStack() as undo:
        for directory in (paths.dir, paths.run_dir):
            directory.mkdir(parents=True, mode=0o711)
            undo.callback(shutil.rmtree, directory, ignore_errors=True)
        Path(sandbox.resolv_conf_path).write_text(render_resolv_conf(config.dns))
        if config.log_directory:
            _make_log_directory(Path(config.log_directory))

        cgroups.create(sandbox.cgroup_path)
        undo.callback(cgroups.remove, sandbox.cgroup_path)

        if sandbox.shm_path:
            mount_shm(paths.shm, settings.shm_size_bytes)
            undo.callback(unmount_if_mounted, paths.shm)

        kinds = pod_namespace_kinds(config.namespaces)
        pins: dict[str, str] = {}
        infra: InfraProcess | None = None
        child: subprocess.Popen[bytes] | None = None
        userns = config.namespaces.user
        if userns is None:
            with unshared(kinds):
                _configure_namespaces(sandbox, kinds, sysctl_paths)
                for kind in kinds:
                    pin = settings.layout.pin_path(kind, sandbox.id)
                    pin_current(kind, pin)
                    undo.callback(unpin, pin)
                    pins[kind] = str(pin)
                if config.namespaces.pid is NamespaceMode.POD:
                    child, infra = _start_infra(settings.infra_command, sandbox.id)
                    undo.callback(_stop_infra, infra, child)
        else:
            pin_paths = {
                kind: settings.layout.pin_path(kind, sandbox.id) for kind in ["user", *kinds]
            }
            request = None
            if config.namespaces.pid is NamespaceMode.POD:
                request = InfraRequest(settings.infra_command, {INFRA_MARKER: sandbox.id})
            infra_pid = create_owned_namespaces(userns, pin_paths, request)
            for pin in pin_paths.values():
                undo.callback(unpin, pin)
            pins = {kind: str(pin) for kind, pin in pin_paths.items()}
            if infra_pid is not None:
                infra = InfraProcess(infra_pid, start_ticks(infra_pid))
                undo.callback(_stop_infra, infra, None)
            with entered({kind: pin_paths[kind] for kind in kinds}):
                _configure_namespaces(sandbox, kinds, sysctl_paths)
        if infra is not None:
            cgroups.add_process(sandbox.cgroup_path, infra.pid)
        undo.pop_all()
    return BuiltSandbox(pins, infra, child)


def _configure_namespaces(sandbox: Sandbox, kinds: list[str], sysctl_paths: dict[str, str]) -> None:
    """Hostname, loopback and sysctls of the pod's namespaces the calling thread is in."""
    config = sandbox.config
    if "uts" in kinds and config.hostname:
        socket.sethostname(config.hostname)
    if "net" in kinds:
        bring_up_loopback()
    apply_sysctls(sysctl_paths, config.sysctls)


def _make_log_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(
            f"config.log_directory {str(path)!r} cannot be created: {exc.strerror}"
        ) from None


def _start_infra(
    command: tuple[str, ...], sandbox_id: str
) -> tuple[subprocess.Popen[bytes], InfraProcess]:
    """Start the infra process as pid 1 of a new PID namespace inside the pod's others."""
    with unshared(["pid"]):
        try:
            child = subprocess.Popen(
                list(command),
                # Set before the fork, so recovery finds the process even if the agent dies
                # before state.db learns its pid.
                env={INFRA_MARKER: sandbox_id},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Its own session: a ^C to the agent's terminal must not end the pod.
                start_new_session=True,
            )
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot start the pod's infra process {command[0]}: {exc.strerror} "
                "(install catatonit or set runtime.infra_command)"
            ) from None
    return child, InfraProcess(child.pid, start_ticks(child.pid))


def _stop_infra(infra: InfraProcess, child: subprocess.Popen[bytes] | None) -> None:
    kill_and_wait(infra)
    if child is not None:
        child.wait()


def stop_sandbox(
    settings: RuntimeSettings, sandbox: Sandbox, infra_child: subprocess.Popen[bytes] | None
) -> None:
    """End the infra process and release /dev/shm and the namespace pins."""
    if sandbox.infra is not None:
        _stop_infra(sandbox.infra, infra_child)
    unmount_if_mounted(settings.layout.sandbox(sandbox.id).shm)
    for pin in sandbox.pins.values():
        unpin(Path(pin))


def remove_sandbox(
    settings: RuntimeSettings,
    cgroups: CgroupLayout,
    sandbox: Sandbox,
    infra_child: subprocess.Popen[bytes] | None,
) -> None:
    stop_sandbox(settings, sandbox, infra_child)
    cgroups.kill_all(sandbox.cgroup_path)
    cgroups.remove(sandbox.cgroup_path)
    paths = settings.layout.sandbox(sandbox.id)
    shutil.rmtree(paths.dir, ignore_errors=True)
    shutil.rmtree(paths.run_dir, ignore_errors=True)
