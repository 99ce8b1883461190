"""Reconciling state.db with the host when the agent starts.

Pods outlive the agent: after a crash or restart their rows, pins, cgroups and infra
processes must agree again before the first RPC is answered.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from network.netns import is_pinned
from runtime.host.cgroups import CgroupLayout
from runtime.host.namespaces import unpin
from runtime.host.processes import find_by_environment, is_running, kill_and_wait
from runtime.pods.model import Sandbox, SandboxState
from runtime.pods.setup import INFRA_MARKER, remove_sandbox, stop_sandbox
from runtime.pods.shm import unmount_if_mounted
from runtime.settings import RuntimeSettings
from runtime.state.sandbox_store import SandboxStore

PIN_KINDS = ("user", "net", "ipc", "uts")


def reconcile_sandboxes(
    settings: RuntimeSettings, cgroups: CgroupLayout, store: SandboxStore
) -> list[str]:
    """Bring rows and host objects back in line; returns one line per thing fixed."""
    fixed: list[str] = []
    for sandbox in store.all():
        try:
            fixed += _reconcile(settings, cgroups, store, sandbox)
        except OSError as exc:
            # One pod the host will not let go of must not keep the agent from serving.
            fixed.append(f"could not reconcile sandbox {sandbox.id}: {exc}")
    fixed += _remove_orphans(settings, {s.id for s in store.all()})
    return fixed


def _reconcile(
    settings: RuntimeSettings, cgroups: CgroupLayout, store: SandboxStore, sandbox: Sandbox
) -> list[str]:
    if sandbox.state is SandboxState.CREATING:
        # The agent may have died between starting the infra process and recording it.
        for process in find_by_environment(INFRA_MARKER, sandbox.id):
            kill_and_wait(process)
        remove_sandbox(settings, cgroups, sandbox, None)
        store.delete(sandbox.id)
        return [f"removed half-built sandbox {sandbox.id}"]
    if sandbox.state is SandboxState.NOTREADY:
        stop_sandbox(settings, sandbox, None)
        return []
    problem = _broken_part(sandbox)
    if not problem:
        return []
    stop_sandbox(settings, sandbox, None)
    store.update(sandbox.id, lambda s: replace(s, state=SandboxState.NOTREADY))
    return [f"sandbox {sandbox.id} is not ready: {problem}"]


def _broken_part(sandbox: Sandbox) -> str:
    for kind, pin in sandbox.pins.items():
        if not is_pinned(Path(pin)):
            return f"{kind} namespace pin {pin} is gone"
    if sandbox.infra is not None and not is_running(sandbox.infra):
        return f"infra process {sandbox.infra.pid} has exited"
    return ""


def _remove_orphans(settings: RuntimeSettings, known_ids: set[str]) -> list[str]:
    """Pins and sandbox dirs with no row: left by a crash between the mount and the commit."""
    fixed: list[str] = []
    layout = settings.layout
    for kind in PIN_KINDS:
        for pin in _entries(layout.pin_dir(kind)):
            if pin.name not in known_ids:
                unpin(pin)
                fixed.append(f"released orphan {kind} pin {pin}")
    for parent in (layout.sandboxes_dir, layout.sandboxes_run_dir):
        for directory in _entries(parent):
            if directory.name not in known_ids:
                unmount_if_mounted(layout.sandbox(directory.name).shm)
                shutil.rmtree(directory, ignore_errors=True)
                fixed.append(f"removed orphan sandbox dir {directory}")
    return fixed


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []
