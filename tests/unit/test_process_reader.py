"""A cgroup's processes read from /proc: real processes listed in recorded cgroup files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics.cgroup_reader import CgroupReader
from metrics.process_reader import read_processes
from tests.waiting import wait_until

# Two threads, a socket pair and a known open-files limit.
_CHILD = """
import resource, socket, threading, time
resource.setrlimit(resource.RLIMIT_NOFILE, (321, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
left, right = socket.socketpair()
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        yield process
    finally:
        process.kill()
        process.wait()


def record(directory: Path, pid: int, threads_file: str) -> None:
    directory.mkdir(parents=True)
    (directory / "cgroup.procs").write_text(f"{pid}\n")
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    (directory / threads_file).write_text("".join(f"{t}\n" for t in tids))


def test_processes_threads_files_sockets_and_limit_are_counted(
    tmp_path: Path, child: subprocess.Popen[str]
) -> None:
    record(tmp_path / "ctr", child.pid, "cgroup.threads")

    stats = read_processes(str(tmp_path / "ctr"), "cgroup.threads", child.pid)

    assert stats is not None
    assert stats.processes == 1
    assert stats.threads == 2
    assert stats.file_descriptors == len(os.listdir(f"/proc/{child.pid}/fd"))
    assert stats.sockets == 2
    assert sum(stats.task_states.values()) == 2
    assert stats.max_open_files == 321


def test_a_stopped_process_is_counted_in_the_stopped_state(
    tmp_path: Path, child: subprocess.Popen[str]
) -> None:
    record(tmp_path / "ctr", child.pid, "tasks")
    child.send_signal(signal.SIGSTOP)

    def stopped() -> bool:
        stats = read_processes(str(tmp_path / "ctr"), "tasks")
        return stats is not None and stats.task_states == {"T": 2}

    assert wait_until(stopped)


def test_v1_reads_tasks_and_v2_reads_cgroup_threads(
    tmp_path: Path, child: subprocess.Popen[str]
) -> None:
    record(tmp_path / "v1" / "pod" / "ctr", child.pid, "tasks")
    record(tmp_path / "v2" / "pod" / "ctr", child.pid, "cgroup.threads")
    v1 = CgroupReader({"memory": tmp_path / "v1"}, None, hugetlb_sizes=[])
    v2 = CgroupReader({}, tmp_path / "v2", v2=True, unified_controllers=[], hugetlb_sizes=[])

    for reader in (v1, v2):
        stats = reader.read_processes("/pod/ctr", child.pid)
        assert stats is not None and stats.threads == 2


def test_members_that_exit_are_not_counted_and_a_gone_cgroup_is_none(tmp_path: Path) -> None:
    exited = subprocess.Popen(["true"])
    exited.wait()
    (tmp_path / "ctr").mkdir()
    (tmp_path / "ctr" / "cgroup.procs").write_text(f"{exited.pid}\n")
    (tmp_path / "ctr" / "tasks").write_text(f"{exited.pid}\n")

    stats = read_processes(str(tmp_path / "ctr"), "tasks")

    assert stats is not None
    assert (stats.file_descriptors, stats.task_states, stats.max_open_files) == (0, {}, None)
    assert read_processes(str(tmp_path / "gone"), "tasks") is None
