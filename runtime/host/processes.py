"""Processes identified by pid plus start time, so a recycled pid is never signalled, and
found by what /proc shows of them: environment, command line, parent."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from runtime.pods.model import InfraProcess

PROC = Path("/proc")


def process_ids(proc: Path = PROC) -> list[int]:
    """Every process there is now; any of them may be gone before it is looked at."""
    return [int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit()]


def _read(pid: int, name: str, proc: Path) -> bytes | None:
    """/proc/PID/NAME, or None when the process is gone or hides it (another user's)."""
    try:
        return (proc / str(pid) / name).read_bytes()
    except OSError:
        return None


def _stat_fields(pid: int, proc: Path = PROC) -> list[str] | None:
    raw = _read(pid, "stat", proc)
    if raw is None:
        return None
    text = raw.decode("ascii", errors="replace")
    # comm (field 2) may contain spaces and parentheses; everything after the last ')' is fixed.
    return text[text.rindex(")") + 2 :].split()


def start_ticks(pid: int, proc: Path = PROC) -> int:
    fields = _stat_fields(pid, proc)
    if fields is None:
        raise ProcessLookupError(pid)
    return int(fields[19])


def is_running(process: InfraProcess, proc: Path = PROC) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    fields = _stat_fields(process.pid, proc)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == process.start_ticks


def find_by_environment(key: str, value: str, proc: Path = PROC) -> list[InfraProcess]:
    """Processes whose environment holds key=value: a marker set before they were forked."""
    wanted = f"{key}={value}".encode()
    found = []
    for pid in process_ids(proc):
        environment = _read(pid, "environ", proc)
        if environment is None or wanted not in environment.split(b"\0"):
            continue
        with contextlib.suppress(ProcessLookupError):
            found.append(InfraProcess(pid, start_ticks(pid, proc)))
    return found


def find_by_command(program: str, argument: str, proc: Path = PROC) -> list[int]:
    """Processes running `program` (by file name) with `argument` among their arguments."""
    found = []
    for pid in process_ids(proc):
        cmdline = _read(pid, "cmdline", proc)
        if not cmdline:
            # Zombies and kernel threads have no command line.
            continue
        argv = cmdline.split(b"\0")
        if os.path.basename(argv[0]) == program.encode() and argument.encode() in argv[1:]:
            found.append(pid)
    return found


def kill_and_wait(process: InfraProcess, timeout_s: float = 5.0) -> None:
    if not is_running(process):
        return
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    # A process that is not our child is reaped by PID 1, which can take seconds here;
    # a zombie counts as gone.
    deadline = time.monotonic() + timeout_s
    delay = 0.0005
    while is_running(process):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {process.pid} did not exit after SIGKILL")
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
        tree = {root_pid} | descendants(root_pid)
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


def descendants(root_pid: int, proc: Path = PROC) -> set[int]:
    """Children, their children and so on, by the parent pids /proc shows now."""
    children: dict[int, list[int]] = {}
    for pid in process_ids(proc):
        fields = _stat_fields(pid, proc)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found: set[int] = set()
    pending = [root_pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found
