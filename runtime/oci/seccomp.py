"""Seccomp profiles in the containers/common (and Docker) format, turned into OCI linux.seccomp.

That format is a superset of the OCI one: `archMap` names the host architecture's companions,
and each syscall rule may apply only for some capabilities, architectures or kernels
(`includes` / `excludes`). The OCI runtime knows none of that, so the rules are settled here
for one container, the way containers/common's `setupSeccomp` does.
"""

from __future__ import annotations

import errno
import json
import os
import platform
from pathlib import Path
from typing import Any

from runtime.errors import InvalidArgument

# uname -m -> (libseccomp architecture, Go's GOARCH as the profile's `arches` names it).
HOST_ARCHES = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"),
    "aarch64": ("SCMP_ARCH_AARCH64", "arm64"),
    "armv7l": ("SCMP_ARCH_ARM", "arm"),
    "i686": ("SCMP_ARCH_X86", "386"),
    "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
    "s390x": ("SCMP_ARCH_S390X", "s390x"),
    "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"),
    "mips64": ("SCMP_ARCH_MIPS64", "mips64"),
    "loongarch64": ("SCMP_ARCH_LOONGARCH64", "loong64"),
}


def load_profile(path: Path) -> dict[str, Any]:
    """The profile as JSON; OSError when unreadable, InvalidArgument when it is no profile."""
    text = path.read_text()
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"seccomp profile {str(path)!r} is not JSON: {exc}") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        raise InvalidArgument(f"seccomp profile {str(path)!r} has no defaultAction")
    return profile


def to_oci(
    profile: dict[str, Any],
    capabilities: list[str],
    *,
    machine: str | None = None,
    kernel_release: str | None = None,
) -> dict[str, Any]:
    """The OCI linux.seccomp object for a process holding `capabilities` on this host."""
    machine = machine or platform.machine()
    seccomp_arch, go_arch = HOST_ARCHES.get(machine, ("", machine))
    kernel = _version(kernel_release or os.uname().release)
    oci: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    default_errno = _errno_ret(profile, "defaultErrnoRet", "defaultErrno")
    if default_errno is not None:
        oci["defaultErrnoRet"] = default_errno
    oci["architectures"] = _architectures(profile, seccomp_arch)
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            oci[key] = profile[key]
    held = set(capabilities)
    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, held, go_arch, kernel):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if not names:
            continue
        syscall: dict[str, Any] = {"names": list(names), "action": rule["action"]}
        errno_ret = _errno_ret(rule, "errnoRet", "errno")
        if errno_ret is not None:
            syscall["errnoRet"] = errno_ret
        if rule.get("args"):
            syscall["args"] = [_arg(a) for a in rule["args"]]
        syscalls.append(syscall)
    oci["syscalls"] = syscalls
    return oci


def _architectures(profile: dict[str, Any], seccomp_arch: str) -> list[str]:
    if profile.get("architectures"):
        return list(profile["architectures"])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == seccomp_arch:
            return [seccomp_arch, *(entry.get("subArchitectures") or [])]
    # An archMap without this host: libseccomp then filters the native architecture only.
    return [seccomp_arch] if seccomp_arch else []


def _applies(rule: dict[str, Any], held: set[str], go_arch: str, kernel: tuple[int, ...]) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("arches") and go_arch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= held:
        return False
    if includes.get("minKernel") and kernel < _version(includes["minKernel"]):
        return False
    if excludes.get("arches") and go_arch in excludes["arches"]:
        return False
    return not (excludes.get("caps") and set(excludes["caps"]) & held)


def _errno_ret(section: dict[str, Any], number_key: str, name_key: str) -> int | None:
    if isinstance(section.get(number_key), int):
        return int(section[number_key])
    name = section.get(name_key)
    if isinstance(name, str) and hasattr(errno, name):
        return int(getattr(errno, name))
    return None


def _arg(arg: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": arg["index"],
        "value": arg.get("value", 0),
        "valueTwo": arg.get("valueTwo", 0),
        "op": arg["op"],
    }


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("-", maxsplit=1)[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)
