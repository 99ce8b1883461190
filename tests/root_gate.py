"""The suite's one root gate.

Everything under tests/integration and tests/e2e, and any other test marked `root`, works on
real namespaces, mounts, cgroups and iptables, so it needs root. Without root such a test is
skipped, unless CI is set: CI runs as root, and a skip there would only hide tests that never
ran, so it fails instead.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

MARKER = "root"
TESTS = Path(__file__).resolve().parent
ROOT_DIRECTORIES = (TESTS / "integration", TESTS / "e2e")


class Verdict(enum.Enum):
    RUN = "run"
    SKIP = "skip"
    FAIL = "fail"


def verdict(euid: int, environ: Mapping[str, str]) -> Verdict:
    if euid == 0:
        return Verdict.RUN
    return Verdict.FAIL if environ.get("CI") else Verdict.SKIP


def needs_root(path: Path) -> bool:
    """Whether the test file at `path` needs root because of where it lives."""
    return any(path.resolve().is_relative_to(directory) for directory in ROOT_DIRECTORIES)


@functools.cache
def _this_run() -> Verdict:
    return verdict(os.geteuid(), os.environ)


def require_root() -> None:
    """Skip the calling test or fixture unless it runs as root; fail instead under CI."""
    match _this_run():
        case Verdict.SKIP:
            pytest.skip("needs root (namespaces, mounts, cgroups)")
        case Verdict.FAIL:
            pytest.fail(f"needs root, but runs as euid {os.geteuid()} with CI set", pytrace=False)
        case Verdict.RUN:
            pass
