"""A cgroup's processes and threads as /proc sees them: counts, open files, sockets, the
state of each thread and the root process's open-files limit, for cAdvisor's process series.

The cgroup lists its members (cgroup.procs and, per thread, `tasks` on v1 or cgroup.threads
on v2); everything else comes from /proc. A member that exits while we read it adds no
files or thread states: a scrape is a moment, not a transaction.
"""

from __future__ import annotations

import os
from collections import Counter

from metrics.model import ProcessStats

_READ_SIZE = 65536


def read_processes(
    cgroup_dir: str, threads_file: str, root_pid: int = 0, *, proc: str = "/proc"
) -> ProcessStats | None:
    """None when the cgroup is gone. The limits are the root process's, as cAdvisor reports
    them: root_pid if it is still a member, else the oldest-numbered member."""
    pids = _members(f"{cgroup_dir}/cgroup.procs")
    tids = _members(f"{cgroup_dir}/{threads_file}")
    if pids is None or tids is None:
        return None
    fds = sockets = 0
    for pid in pids:
        opened, socket_count = _open_files(f"{proc}/{pid}/fd")
        fds += opened
        sockets += socket_count
    states: Counter[str] = Counter()
    for tid in tids:
        state = _thread_state(f"{proc}/{tid}/stat")
        if state is not None:
            states[state] += 1
    root = _root(pids, root_pid)
    return ProcessStats(
        processes=len(pids),
        threads=len(tids),
        file_descriptors=fds,
        sockets=sockets,
        task_states=dict(states),
        max_open_files=None if root is None else _soft_open_files(f"{proc}/{root}/limits"),
    )


def _root(pids: list[int], root_pid: int) -> int | None:
    if root_pid in pids:
        return root_pid
    return min(pids) if pids else None


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _members(path: str) -> list[int] | None:
    text = _read(path)
    if text is None:
        return None
    return [int(word) for word in text.split() if word.isdigit()]


def _open_files(fd_dir: str) -> tuple[int, int]:
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return 0, 0
    sockets = 0
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                sockets += 1
        except OSError:
            continue
    return len(names), sockets


def _thread_state(stat_path: str) -> str | None:
    text = _read(stat_path)
    if not text:
        return None
    # The command name in parentheses may hold spaces and parentheses; the state follows the
    # last closing one.
    _, _, rest = text.rpartition(")")
    fields = rest.split()
    return fields[0] if fields else None


def _soft_open_files(limits_path: str) -> int | None:
    text = _read(limits_path)
    for line in (text or "").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return -1 if soft == "unlimited" else int(soft)
    return None
