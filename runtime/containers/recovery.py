"""Reconciling container rows with the host when the agent starts.

Containers outlive the agent under their conmon. A container that exited while the agent
was away left its code in the exit dir; one whose conmon is gone without an exit file went
down with the host (the exit dir lives on tmpfs) and is reported exited with reason Unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from runtime.containers.bundle import container_cgroup_path, remove_files
from runtime.containers.exit_recorder import UNKNOWN_EXIT_CODE, ExitRecorder
from runtime.containers.model import Container, ContainerState
from runtime.host.cgroups import CgroupLayout
from runtime.host.processes import find_by_command
from runtime.oci.exit_files import read_exit_file
from runtime.oci.runtime_cli import OciRuntime, OciRuntimeError
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore
from runtime.state.sandbox_store import SandboxStore


async def reconcile_containers(
    settings: RuntimeSettings,
    cgroups: CgroupLayout,
    stores: tuple[ContainerStore, SandboxStore],
    runtimes: dict[str, OciRuntime],
) -> list[str]:
    store, sandboxes = stores
    fixed: list[str] = []
    for container in store.all():
        try:
            if container.state is ContainerState.CREATING or container.removing:
                fixed += await _remove_half_created(settings, cgroups, stores, runtimes, container)
            elif container.state is ContainerState.CREATED and not container.conmon_pid:
                fixed += await _undo_half_started(settings, cgroups, stores, runtimes, container)
            else:
                fixed += await asyncio.to_thread(
                    _reconcile, settings, cgroups, store, sandboxes, container
                )
        except OSError as exc:
            fixed.append(f"could not reconcile container {container.id}: {exc}")
    known = {c.id for c in store.all()}
    return fixed + await asyncio.to_thread(_remove_orphans, settings, known)


async def _remove_half_created(
    settings: RuntimeSettings,
    cgroups: CgroupLayout,
    stores: tuple[ContainerStore, SandboxStore],
    runtimes: dict[str, OciRuntime],
    container: Container,
) -> list[str]:
    store, sandboxes = stores
    for pid in await asyncio.to_thread(conmon_pids, container.id):
        _kill(pid)
    runtime = runtimes.get(container.runtime_handler)
    if runtime is not None:
        # What the runtime made of the create is gone either way; a refusal here changes nothing.
        with contextlib.suppress(OciRuntimeError):
            await runtime.delete(container.id, force=True)
    await asyncio.to_thread(remove_files, settings.layout.container(container.id))
    sandbox = sandboxes.find(container.sandbox_id)
    if sandbox is not None:
        await asyncio.to_thread(
            cgroups.remove, container_cgroup_path(sandbox.cgroup_path, container.id)
        )
    store.delete(container.id)
    if container.removing:
        return [f"finished removing container {container.id}"]
    return [f"removed half-created container {container.id}"]


async def _undo_half_started(
    settings: RuntimeSettings,
    cgroups: CgroupLayout,
    stores: tuple[ContainerStore, SandboxStore],
    runtimes: dict[str, OciRuntime],
    container: Container,
) -> list[str]:
    """A created container is handed to the runtime by its start: one the agent died in the
    middle of goes back to created, to be started again, if its rootfs is still mounted."""
    store, sandboxes = stores
    fixed = []
    pids = await asyncio.to_thread(conmon_pids, container.id)
    if pids:
        for pid in pids:
            _kill(pid)
        runtime = runtimes.get(container.runtime_handler)
        if runtime is not None:
            with contextlib.suppress(OciRuntimeError):
                await runtime.delete(container.id, force=True)
        fixed.append(f"undid the interrupted start of container {container.id}")
    rootfs = settings.layout.container(container.id).rootfs
    if await asyncio.to_thread(os.path.ismount, rootfs):
        return fixed
    ExitRecorder(store, sandboxes, cgroups.oom_kills).record(
        container,
        UNKNOWN_EXIT_CODE,
        time.time_ns(),
        "Unknown",
        "the container's rootfs is gone before it started (host reboot?)",
    )
    return [*fixed, f"container {container.id} lost its rootfs before it started"]


def _reconcile(
    settings: RuntimeSettings,
    cgroups: CgroupLayout,
    store: ContainerStore,
    sandboxes: SandboxStore,
    container: Container,
) -> list[str]:
    if container.state not in (ContainerState.CREATED, ContainerState.RUNNING):
        return []
    exits = ExitRecorder(store, sandboxes, cgroups.oom_kills)
    try:
        recorded = read_exit_file(settings.layout.exit_file(container.id))
    except ValueError as exc:
        exits.record(container, UNKNOWN_EXIT_CODE, time.time_ns(), "Unknown", str(exc))
        return [f"container {container.id} exited while the agent was away: {exc}"]
    if recorded is not None:
        finished = exits.record(container, recorded.code, recorded.written_at_ns)
        return [f"container {container.id} exited while the agent was away: {finished.exit_code}"]
    if conmon_pids(container.id):
        return []
    exits.record(
        container,
        UNKNOWN_EXIT_CODE,
        time.time_ns(),
        "Unknown",
        "the container's conmon is gone and left no exit code (host reboot?)",
    )
    return [f"container {container.id} is gone without an exit code"]


def conmon_pids(container_id: str) -> list[int]:
    """conmon processes supervising this container, found by their command line."""
    return find_by_command("conmon", container_id)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _remove_orphans(settings: RuntimeSettings, known: set[str]) -> list[str]:
    fixed = []
    layout = settings.layout
    for parent in (layout.containers_dir, layout.containers_run_dir):
        try:
            entries = list(parent.iterdir())
        except FileNotFoundError:
            continue
        for directory in entries:
            if directory.name not in known:
                remove_files(layout.container(directory.name))
                shutil.rmtree(directory, ignore_errors=True)
                fixed.append(f"removed orphan container dir {directory}")
    for exit_file in _files(layout.exits_dir):
        if exit_file.name not in known:
            exit_file.unlink(missing_ok=True)
    return fixed


def _files(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []
