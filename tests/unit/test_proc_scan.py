"""Finding processes on a fake /proc: the one scanner behind every search by environment,
command line or parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.host.processes import (
    descendants,
    find_by_command,
    find_by_environment,
    process_ids,
    start_ticks,
)
from runtime.pods.model import InfraProcess


def _process(  # noqa: PLR0917
    proc: Path, pid: int, ppid: int, argv: list[str], env: list[str], state: str = "S"
) -> None:
    directory = proc / str(pid)
    directory.mkdir()
    # Fields 3 onwards after "(comm)": state, ppid, ..., starttime is the 22nd field.
    rest = [state, str(ppid), *["0"] * 17, str(1000 + pid)]
    (directory / "stat").write_text(f"{pid} (odd) name) {' '.join(rest)}\n")
    (directory / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0" * bool(argv))
    (directory / "environ").write_bytes(b"\0".join(e.encode() for e in env) + b"\0")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    _process(tmp_path, 1, 0, ["/sbin/init"], ["HOME=/"])
    _process(tmp_path, 10, 1, ["/usr/bin/conmon", "-c", "abc", "-u", "abc"], [])
    _process(tmp_path, 11, 10, ["/bin/sh"], ["MOORAGE_SANDBOX_ID=pod1", "PATH=/bin"])
    _process(tmp_path, 12, 11, ["sleep", "60"], ["MOORAGE_SANDBOX_ID=pod10"])
    _process(tmp_path, 13, 1, [], [], state="Z")
    _process(tmp_path, 14, 1, ["/opt/notconmon", "abc"], [])
    (tmp_path / "self").mkdir()
    (tmp_path / "cgroups").write_text("")
    return tmp_path


def test_every_numbered_entry_is_a_process(proc: Path) -> None:
    assert sorted(process_ids(proc)) == [1, 10, 11, 12, 13, 14]


def test_found_by_an_exact_environment_entry(proc: Path) -> None:
    assert find_by_environment("MOORAGE_SANDBOX_ID", "pod1", proc) == [
        InfraProcess(11, start_ticks(11, proc))
    ]
    assert start_ticks(11, proc) == 1011


def test_found_by_program_name_and_argument(proc: Path) -> None:
    assert find_by_command("conmon", "abc", proc) == [10]
    assert find_by_command("conmon", "ab", proc) == []
    assert find_by_command("sh", "abc", proc) == []


def test_descendants_follow_parent_pids(proc: Path) -> None:
    assert descendants(10, proc) == {11, 12}
    assert descendants(1, proc) == {10, 11, 12, 13, 14}
    assert descendants(12, proc) == set()


def test_a_process_gone_while_scanning_is_skipped(proc: Path) -> None:
    (proc / "99").mkdir()
    assert find_by_environment("HOME", "/", proc) == [InfraProcess(1, 1001)]
    assert find_by_command("conmon", "abc", proc) == [10]
    assert 99 not in descendants(1, proc)
