"""DirWatch: a change in a watched directory is seen by the next question, and nothing is
reported while nothing changes."""

from __future__ import annotations

import os
from pathlib import Path

from network.dir_watch import DirWatch


def test_the_first_question_reports_a_change_and_the_next_none(tmp_path: Path) -> None:
    watch = DirWatch([tmp_path])

    assert watch.changed()
    assert not watch.changed()


def test_a_file_written_renamed_or_removed_is_seen_by_the_next_question(tmp_path: Path) -> None:
    watch = DirWatch([tmp_path])
    watch.changed()

    (tmp_path / "10.conflist").write_text("{}")
    assert watch.changed()
    assert not watch.changed()
    os.rename(tmp_path / "10.conflist", tmp_path / "20.conflist")
    assert watch.changed()
    (tmp_path / "20.conflist").unlink()
    assert watch.changed()
    (tmp_path / "plugin").touch()
    assert watch.changed()
    (tmp_path / "plugin").chmod(0o755)
    assert watch.changed()


def test_a_directory_made_later_is_watched_once_it_exists(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    watch = DirWatch([conf_dir])
    watch.changed()

    conf_dir.mkdir()
    assert watch.changed()
    assert not watch.changed()
    (conf_dir / "10.conflist").write_text("{}")
    assert watch.changed()


def test_a_directory_removed_and_made_again_is_still_watched(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    watch = DirWatch([conf_dir])
    watch.changed()

    conf_dir.rmdir()
    assert watch.changed()
    conf_dir.mkdir()
    assert watch.changed()
    (conf_dir / "10.conflist").write_text("{}")
    assert watch.changed()


def test_without_a_parent_to_watch_every_question_reports_a_change(tmp_path: Path) -> None:
    watch = DirWatch([tmp_path / "no" / "such" / "dir"])

    assert watch.changed()
    assert watch.changed()
