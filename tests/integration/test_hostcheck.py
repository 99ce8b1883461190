import os
from pathlib import Path

import pytest

from runtime.host.checks import HostCheck, format_host_checks, host_checks_pass, run_host_checks

CRUN = Path("/usr/bin/crun")
RUNC = Path("/usr/sbin/runc")
CONMON = Path("/usr/bin/conmon")
SECCOMP = Path("/usr/share/containers/seccomp.json")
CATATONIT = Path("/usr/bin/catatonit")


def _check(
    tmp_path: Path,
    runtimes: dict[str, Path] | None = None,
    seccomp: Path = SECCOMP,
) -> list[HostCheck]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return run_host_checks(
        runtimes if runtimes is not None else {"crun": CRUN, "runc": RUNC},
        CONMON,
        seccomp,
        CATATONIT,
        work,
    )


def _named(checks: list[HostCheck], name: str) -> HostCheck:
    [check] = [c for c in checks if c.name == name]
    return check


def _mount_points() -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]


def _is_hybrid_host() -> bool:
    return "/sys/fs/cgroup/unified" in _mount_points() and "/sys/fs/cgroup/cpu" in _mount_points()


def test_every_check_passes_on_this_host(tmp_path: Path) -> None:
    checks = _check(tmp_path)

    assert [c.name for c in checks] == [
        "oci runtime crun",
        "oci runtime runc",
        "conmon",
        "cgroups",
        "overlayfs",
        "iptables",
        "seccomp profile",
        "namespaces",
        "infra process",
    ]
    assert [c for c in checks if not c.ok] == [], format_host_checks(checks)
    assert all(c.required for c in checks)
    assert host_checks_pass(checks)
    assert _named(checks, "oci runtime crun").detail.startswith("crun version ")
    assert _named(checks, "conmon").detail.startswith("conmon version ")
    cgroups = _named(checks, "cgroups").detail
    assert all(controller in cgroups for controller in ("cpu", "memory", "pids"))


@pytest.mark.skipif(not _is_hybrid_host(), reason="only hybrid cgroup hosts need the workaround")
def test_crun_on_a_hybrid_host_passes_by_hiding_the_unified_hierarchy(tmp_path: Path) -> None:
    checks = _check(tmp_path, {"crun": CRUN})

    crun = _named(checks, "oci runtime crun")
    assert crun.ok
    assert "private mount namespace without /sys/fs/cgroup/unified" in crun.detail
    assert _named(checks, "cgroups").detail.startswith("v1 hybrid")


def test_missing_runtime_binary_fails_with_a_fix(tmp_path: Path) -> None:
    checks = _check(tmp_path, {"crun": tmp_path / "no-such-crun"})

    crun = _named(checks, "oci runtime crun")
    assert not crun.ok
    assert crun.required
    assert "apt-get install" in crun.fix
    assert not host_checks_pass(checks)
    assert format_host_checks(checks).splitlines()[0] == (
        f"FAIL oci runtime crun: {crun.detail} (fix: {crun.fix})"
    )


def test_missing_non_default_runtime_fails_without_failing_the_host(tmp_path: Path) -> None:
    checks = _check(tmp_path, {"runc": RUNC, "kata": tmp_path / "no-such-kata"})

    kata = _named(checks, "oci runtime kata")
    assert not kata.ok
    assert not kata.required
    assert kata.fix
    assert host_checks_pass(checks)


@pytest.mark.parametrize("content", ["not json {", "[]", '{"syscalls": []}'])
def test_seccomp_profile_that_is_not_json_with_a_default_action_fails(
    tmp_path: Path, content: str
) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text(content)

    checks = _check(tmp_path, seccomp=profile)

    seccomp = _named(checks, "seccomp profile")
    assert not seccomp.ok
    assert seccomp.fix
    assert not host_checks_pass(checks)


def test_missing_seccomp_profile_fails(tmp_path: Path) -> None:
    checks = _check(tmp_path, seccomp=tmp_path / "absent.json")

    assert not _named(checks, "seccomp profile").ok


def test_run_leaves_nothing_behind(tmp_path: Path) -> None:
    _check(tmp_path)

    work = tmp_path / "work"
    assert list(work.iterdir()) == []
    assert [m for m in _mount_points() if m.startswith(str(work))] == []
    rooted_in_work = []
    for proc in Path("/proc").iterdir():
        try:
            if os.readlink(proc / "root").startswith(str(work)):
                rooted_in_work.append(proc.name)
        except OSError:
            continue
    assert rooted_in_work == []
    assert list(Path("/sys/fs/cgroup").glob("*/moorage-hostcheck-*")) == []


def test_format_host_checks_writes_one_line_per_check() -> None:
    checks = [
        HostCheck("conmon", True, True, "conmon version 2.1.6"),
        HostCheck("iptables", False, True, "not found", fix="apt-get install iptables"),
    ]

    assert format_host_checks(checks) == (
        "OK   conmon: conmon version 2.1.6\n"
        "FAIL iptables: not found (fix: apt-get install iptables)"
    )
