"""Reading cgroupfs files for one scrape: each file once, problems noted, never raised."""

from __future__ import annotations

import errno
import os

_READ_SIZE = 65536
# errnos that mean the cgroup went away between listing and reading.
_GONE = (errno.ENOENT, errno.ENODEV)


class Scrape:
    """The files of one read(); problems wait until we know the cgroup still exists."""

    __slots__ = ("missing", "problems")

    def __init__(self) -> None:
        self.missing = False
        self.problems: list[tuple[str, str]] = []

    def text(self, directory: str, name: str) -> str | None:
        try:
            fd = os.open(f"{directory}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, _READ_SIZE)
                # seq_file fills the buffer before returning, so only a full one may hold more.
                if len(data) == _READ_SIZE:
                    chunks = [data]
                    while chunk := os.read(fd, _READ_SIZE):
                        chunks.append(chunk)
                    data = b"".join(chunks)
            finally:
                os.close(fd)
            return data.decode("ascii")
        except OSError as exc:
            if exc.errno in _GONE:
                self.missing = True
                self.problems.append((name, "missing"))
            else:
                self.problems.append((name, f"unreadable: {errno.errorcode.get(exc.errno or 0)}"))
        except UnicodeDecodeError:
            self.problems.append((name, "malformed"))
        return None

    def number(self, directory: str, name: str) -> int | None:
        """A one-value file; "max" (unlimited) reads as None."""
        text = self.text(directory, name)
        if text is None:
            return None
        value = text.strip()
        if value == "max":
            return None
        try:
            return int(value)
        except ValueError:
            self.problems.append((name, "malformed" if value else "empty"))
            return None

    def flat_keyed(self, directory: str, name: str) -> dict[str, int]:
        """A "key value" per line file; lines that do not parse are dropped and reported."""
        text = self.text(directory, name)
        if text is None:
            return {}
        values: dict[str, int] = {}
        torn = False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            try:
                values[key] = int(value)
            except ValueError:
                torn = True
        if torn or not values:
            self.problems.append((name, "malformed" if text.strip() else "empty"))
        return values


def scaled(value: int | None, factor: int) -> int | None:
    return None if value is None else value * factor


def working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None or inactive_file is None:
        return None
    return max(usage - inactive_file, 0)
