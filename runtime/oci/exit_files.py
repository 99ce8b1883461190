"""conmon's record of a container's end: a file named after the container in the exits dir
(Layout.exit_file), holding the exit code as decimal text (128 + signal for a killed process)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RecordedExit:
    code: int
    # When conmon wrote the file: the container's end, also for exits seen only after a restart.
    written_at_ns: int


def read_exit_file(path: Path) -> RecordedExit | None:
    """None while conmon has recorded no exit; ValueError when the file holds no code."""
    try:
        text = path.read_text().strip()
        written_at_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    try:
        return RecordedExit(int(text), written_at_ns)
    except ValueError:
        raise ValueError(f"exit file {path} holds {text!r}, not an exit code") from None


def exit_recorded(path: Path) -> bool:
    """True once conmon recorded the container's end: it renames the file into place whole."""
    return path.is_file()
