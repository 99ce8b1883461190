"""Looking at the host from outside the agent: /proc, mounts, namespaces, cgroups."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from tests.waiting import wait_until

CGROUP_FS = Path("/sys/fs/cgroup")


class ProcessId(NamedTuple):
    """A pid plus its start time in clock ticks, so a recycled pid is never mistaken."""

    pid: int
    start_ticks: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the command name, which may itself contain spaces and parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def process_id(pid: int) -> ProcessId | None:
    fields = _stat_fields(pid)
    return None if fields is None else ProcessId(pid, int(fields[19]))


def is_alive(proc: ProcessId) -> bool:
    """The same process still exists and is not a zombie."""
    fields = _stat_fields(proc.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == proc.start_ticks


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def mounts() -> list[tuple[str, str, str, str]]:
    """(source, mount point, fstype, options) of every mount in our mount namespace."""
    entries = []
    for line in Path("/proc/mounts").read_text().splitlines():
        source, point, fstype, options = line.split()[:4]
        entries.append((_unescape(source), _unescape(point), fstype, options))
    return entries


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    return [point for _, point, _, _ in mounts() if (point + "/").startswith(prefix)]


def mount_at(path: str) -> tuple[str, str, str, str] | None:
    """The topmost mount at exactly `path`, if any."""
    found = [entry for entry in mounts() if entry[1] == path]
    return found[-1] if found else None


def ns_inode_of_process(pid: int, kind: str) -> int:
    # The link reads e.g. "net:[4026532281]".
    link = os.readlink(f"/proc/{pid}/ns/{kind}")
    return int(link.split("[")[1].rstrip("]"))


def ns_inode_of_pin(pin: str) -> int:
    return os.stat(pin).st_ino


def nsenter(namespace_args: list[str], command: list[str]) -> str:
    result = subprocess.run(
        ["nsenter", *namespace_args, "--", *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    assert result.returncode == 0, f"nsenter {namespace_args} {command}: {result.stderr}"
    return result.stdout


def ns_pid_chain(pid: int) -> list[int]:
    """The NSpid line of /proc/PID/status: the pid in each nested PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(p) for p in line.split()[1:]]
    raise AssertionError(f"/proc/{pid}/status has no NSpid line")


def process_name(pid: int) -> str:
    """An empty name once the process is gone: children_of may list one that exits just after."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def children_of(pid: int) -> list[int]:
    """Direct children of every thread of `pid`; a thread that exits meanwhile reads as ESRCH."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def remove_cgroup_dir(directory: Path, timeout_s: float) -> OSError | None:
    """rmdir a cgroup, again while it is busy (its killed tasks are still leaving) until the
    deadline; returns the error that stopped it, None once it is gone."""
    error: OSError | None = None

    def settled() -> bool:
        nonlocal error
        error = None
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            error = exc
            return exc.errno != errno.EBUSY
        return True

    wait_until(settled, timeout_s)
    return error
