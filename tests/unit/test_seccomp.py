from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import InvalidArgument
from runtime.oci.capabilities import DEFAULT_CAPABILITIES
from runtime.oci.seccomp import load_profile, to_oci

HOST_PROFILE = Path("/usr/share/containers/seccomp.json")


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    if not HOST_PROFILE.is_file():
        pytest.skip(f"needs {HOST_PROFILE}")
    return load_profile(HOST_PROFILE)


def _actions(oci: dict[str, Any], name: str) -> list[tuple[str, int | None, bool]]:
    """(action, errnoRet, has args) of every rule naming `name`."""
    return [
        (rule["action"], rule.get("errnoRet"), "args" in rule)
        for rule in oci["syscalls"]
        if name in rule["names"]
    ]


def _defaults() -> list[str]:
    return list(DEFAULT_CAPABILITIES)


def test_default_action_and_x86_64_architectures(profile: dict[str, Any]) -> None:
    oci = to_oci(profile, _defaults(), machine="x86_64")

    assert oci["defaultAction"] == "SCMP_ACT_ERRNO"
    assert oci["defaultErrnoRet"] == 38
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert "archMap" not in oci


def test_only_oci_keys_remain_in_each_rule(profile: dict[str, Any]) -> None:
    oci = to_oci(profile, _defaults(), machine="x86_64")

    assert {key for rule in oci["syscalls"] for key in rule} <= {
        "names",
        "action",
        "errnoRet",
        "args",
    }
    personality = [r for r in oci["syscalls"] if r["names"] == ["personality"]]
    assert {"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"} in [
        r["args"][0] for r in personality
    ]


def test_cap_sys_admin_rules_depend_on_holding_it(profile: dict[str, Any]) -> None:
    without = to_oci(profile, _defaults(), machine="x86_64")
    with_admin = to_oci(profile, [*_defaults(), "CAP_SYS_ADMIN"], machine="x86_64")

    assert _actions(without, "bpf") == [("SCMP_ACT_ERRNO", 1, False)]
    assert _actions(with_admin, "bpf") == [("SCMP_ACT_ALLOW", None, False)]


def test_chroot_is_allowed_by_the_default_capability_set(profile: dict[str, Any]) -> None:
    assert _actions(to_oci(profile, _defaults(), machine="x86_64"), "chroot") == [
        ("SCMP_ACT_ALLOW", None, False)
    ]
    dropped = [c for c in _defaults() if c != "CAP_SYS_CHROOT"]
    assert _actions(to_oci(profile, dropped, machine="x86_64"), "chroot") == [
        ("SCMP_ACT_ERRNO", 1, False)
    ]


def test_audit_socket_rules_follow_cap_audit_write(profile: dict[str, Any]) -> None:
    held = to_oci(profile, _defaults(), machine="x86_64")
    dropped = [c for c in _defaults() if c != "CAP_AUDIT_WRITE"]
    not_held = to_oci(profile, dropped, machine="x86_64")

    assert _actions(held, "socket") == [("SCMP_ACT_ALLOW", None, False)]
    assert [a for a, _, has_args in _actions(not_held, "socket") if has_args] == [
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ALLOW",
    ]


def test_arch_specific_rules_follow_the_host_architecture(profile: dict[str, Any]) -> None:
    amd64 = to_oci(profile, _defaults(), machine="x86_64")
    arm64 = to_oci(profile, _defaults(), machine="aarch64")

    assert _actions(amd64, "arch_prctl") == [("SCMP_ACT_ALLOW", None, False)]
    assert _actions(arm64, "arch_prctl") == []
    assert _actions(arm64, "arm_fadvise64_64") == [("SCMP_ACT_ALLOW", None, False)]
    assert arm64["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_min_kernel_and_excluded_arches_are_honoured() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
            {"names": ["not_amd64"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
            {"name": "single", "action": "SCMP_ACT_ERRNO", "errno": "EPERM"},
        ],
    }

    old = to_oci(profile, [], machine="x86_64", kernel_release="5.4.0-150-generic")
    new = to_oci(profile, [], machine="x86_64", kernel_release="6.18.0")

    assert old["architectures"] == ["SCMP_ARCH_X86_64"]
    assert [r["names"] for r in old["syscalls"]] == [["single"]]
    assert old["syscalls"][0]["errnoRet"] == 1
    assert [r["names"] for r in new["syscalls"]] == [["new_call"], ["single"]]


def test_a_profile_that_is_not_json_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{nope")

    with pytest.raises(InvalidArgument, match="not JSON"):
        load_profile(path)


def test_a_profile_without_default_action_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"syscalls": []}))

    with pytest.raises(InvalidArgument, match="defaultAction"):
        load_profile(path)


def test_a_missing_profile_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_profile(tmp_path / "absent.json")
