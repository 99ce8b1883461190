"""Processes identified by pid plus start time, so a recycled pid is never signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from runtime.pods.model import InfraProcess


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses; everything after the last ')' is fixed.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return int(fields[19])


def is_running(proc: InfraProcess) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    fields = _stat_fields(proc.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == proc.start_ticks


def find_by_environment(key: str, value: str) -> list[InfraProcess]:
    """Processes whose environment holds key=value: a marker set before they were forked."""
    wanted = f"{key}={value}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environment = f.read().split(b"\0")
            if wanted in environment:
                pid = int(entry.name)
                found.append(InfraProcess(pid, start_ticks(pid)))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def kill_and_wait(proc: InfraProcess, timeout_s: float = 5.0) -> None:
    if not is_running(proc):
        return
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    # A process that is not our child is reaped by PID 1, which can take seconds here;
    # a zombie counts as gone.
    deadline = time.monotonic() + timeout_s
    delay = 0.0005
    while is_running(proc):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {proc.pid} did not exit after SIGKILL")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def kill_tree(root_pid: int) -> list[int]:
    """SIGKILL a process and all its descendants; returns the pids signalled.

    Killing only the root would reparent its children to the pid namespace's init, where
    nothing ties them to the root any more. So the tree is stopped first, level by level
    until no new descendant appears (a stopped process cannot fork), then killed whole.
    """
    stopped: set[int] = set()
    while True:
        tree = {root_pid} | _descendants(root_pid)
        new = tree - stopped
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(stopped)


def _descendants(root_pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    pending = [root_pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found
