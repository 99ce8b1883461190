"""Processes identified by pid plus start time, so a recycled pid is never signalled."""

from __future__ import annotations

import os
import signal
import time

from runtime.model import InfraProcess


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
