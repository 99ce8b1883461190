from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.host.processes import is_running, kill_and_wait, kill_tree, start_ticks
from runtime.pods.model import InfraProcess
from tests.waiting import wait_until


def _wait_for_exit_without_reaping(child: subprocess.Popen[bytes]) -> None:
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "30"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_own_process_is_running() -> None:
    me = InfraProcess(os.getpid(), start_ticks(os.getpid()))

    assert is_running(me)


def test_start_ticks_of_a_process_do_not_change() -> None:
    assert start_ticks(os.getpid()) == start_ticks(os.getpid()) > 0


def test_changed_start_ticks_count_as_not_running() -> None:
    """A recycled pid carries another start time: it is not our process."""
    ticks = start_ticks(os.getpid())

    assert not is_running(InfraProcess(os.getpid(), ticks + 1))
    assert not is_running(InfraProcess(os.getpid(), ticks - 1))


def test_child_started_later_has_later_start_ticks(sleeper: subprocess.Popen[bytes]) -> None:
    assert start_ticks(sleeper.pid) >= start_ticks(os.getpid())
    assert is_running(InfraProcess(sleeper.pid, start_ticks(sleeper.pid)))


def test_reaped_child_is_not_running() -> None:
    child = subprocess.Popen(["/bin/true"])
    proc = InfraProcess(child.pid, start_ticks(child.pid))
    child.wait()

    assert not is_running(proc)
    with pytest.raises(ProcessLookupError):
        start_ticks(child.pid)


def test_zombie_child_is_not_running() -> None:
    child = subprocess.Popen(["/bin/true"])
    try:
        proc = InfraProcess(child.pid, start_ticks(child.pid))
        _wait_for_exit_without_reaping(child)

        assert start_ticks(child.pid) == proc.start_ticks
        assert not is_running(proc)
    finally:
        child.wait()


def test_command_name_with_spaces_and_parentheses_is_parsed(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    shutil.copy("/bin/sleep", odd)
    child = subprocess.Popen([str(odd), "30"])
    try:
        ticks = start_ticks(child.pid)

        assert ticks >= start_ticks(os.getpid())
        assert is_running(InfraProcess(child.pid, ticks))
    finally:
        child.kill()
        child.wait()


def test_kill_and_wait_ends_a_running_process(sleeper: subprocess.Popen[bytes]) -> None:
    proc = InfraProcess(sleeper.pid, start_ticks(sleeper.pid))

    kill_and_wait(proc, timeout_s=5.0)

    assert not is_running(proc)
    assert sleeper.wait(timeout=5) == -9


def test_kill_and_wait_spares_a_process_with_other_start_ticks(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """Regression guard: a recycled pid must never be signalled."""
    stale = InfraProcess(sleeper.pid, start_ticks(sleeper.pid) + 1)

    kill_and_wait(stale, timeout_s=0.1)

    assert sleeper.poll() is None


def test_kill_and_wait_of_a_gone_process_returns() -> None:
    child = subprocess.Popen(["/bin/true"])
    proc = InfraProcess(child.pid, start_ticks(child.pid))
    child.wait()

    kill_and_wait(proc, timeout_s=0.1)


def test_kill_tree_kills_the_process_and_every_descendant() -> None:
    """Regression: killing an exec'd shell alone left its children running."""
    marker = f"moorage-kill-tree-{os.getpid()}"
    root = subprocess.Popen(
        ["sh", "-c", f"(sleep 300; : {marker}) & sh -c 'sleep 300; : {marker}' & wait"]
    )
    try:
        assert wait_until(lambda: len(_descendants_of(root.pid)) >= 4)
        tree = {root.pid, *_descendants_of(root.pid)}

        killed = kill_tree(root.pid)

        assert set(killed) == tree
        root.wait(timeout=5)
        assert wait_until(lambda: not any(is_live(pid) for pid in tree - {root.pid}))
    finally:
        root.kill()
        root.wait()


def _descendants_of(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) in {pid, *found}:
                found.add(int(entry.name))
    return found


def is_live(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
