"""The root gate: a test that needs root is skipped without it, and fails under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import root_gate
from tests.root_gate import Verdict, verdict

REPO = Path(__file__).resolve().parents[2]
# One cheap test from each gated directory, and one unit test marked by hand.
GATED = [
    "tests/integration/test_hostcheck.py::test_format_host_checks_writes_one_line_per_check",
    "tests/e2e/test_cli.py::test_version_prints_the_package_version",
    "tests/unit/test_unpack.py::test_devices_are_made",
]
# pytest as a user that is not root: the gate reads the euid through os.geteuid.
AS_NOBODY = (
    "import os, sys, pytest; os.geteuid = lambda: 65534; sys.exit(pytest.main(sys.argv[1:]))"
)


def _run_as_nobody(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-c", AS_NOBODY, "-p", "no:cacheprovider", "-rA", *GATED],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("euid", "environ", "expected"),
    [
        (0, {}, Verdict.RUN),
        (0, {"CI": "true"}, Verdict.RUN),
        (1000, {}, Verdict.SKIP),
        (1000, {"CI": ""}, Verdict.SKIP),
        (1000, {"CI": "true"}, Verdict.FAIL),
    ],
)
def test_the_verdict_depends_on_the_euid_and_ci(
    euid: int, environ: dict[str, str], expected: Verdict
) -> None:
    assert verdict(euid, environ) is expected


def test_integration_and_e2e_need_root_by_place() -> None:
    tests = Path(root_gate.__file__).parent
    assert root_gate.needs_root(tests / "integration" / "test_cni.py")
    assert root_gate.needs_root(tests / "e2e" / "test_containers.py")
    assert not root_gate.needs_root(Path(__file__))


def test_without_root_the_gated_tests_are_skipped() -> None:
    result = _run_as_nobody(ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 skipped" in result.stdout, result.stdout
    assert "passed" not in result.stdout, result.stdout


def test_without_root_under_ci_the_gated_tests_fail() -> None:
    result = _run_as_nobody(ci="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "3 errors" in result.stdout, result.stdout
    assert "with CI set" in result.stdout, result.stdout
