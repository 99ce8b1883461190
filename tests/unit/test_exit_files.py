"""Reading conmon's exit files: the one reader the watcher, start and recovery share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.oci.exit_files import RecordedExit, exit_recorded, read_exit_file


def test_a_recorded_exit_has_its_code_and_the_time_conmon_wrote_it(tmp_path: Path) -> None:
    (tmp_path / "c1").write_text("137\n")
    os.utime(tmp_path / "c1", ns=(1_000, 2_000_000_000))
    assert read_exit_file(tmp_path / "c1") == RecordedExit(137, 2_000_000_000)
    assert exit_recorded(tmp_path / "c1")


def test_no_file_means_no_exit_yet(tmp_path: Path) -> None:
    assert read_exit_file(tmp_path / "running") is None
    assert not exit_recorded(tmp_path / "running")
    assert read_exit_file(tmp_path / "no-such-dir" / "running") is None


@pytest.mark.parametrize("text", ["", "  \n", "oops"])
def test_a_file_without_a_code_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    (tmp_path / "c2").write_text(text)
    with pytest.raises(ValueError, match="c2"):
        read_exit_file(tmp_path / "c2")
    assert exit_recorded(tmp_path / "c2")
