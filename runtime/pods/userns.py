"""A pod's own user namespace, and the pod namespaces it must own, made by a helper process.

A multithreaded process cannot enter a user namespace (setns and unshare refuse it), and a
namespace belongs to the user namespace of the process that made it. containerd's rule is
that every namespace of a user-namespaced pod belongs to the pod's user namespace: a runtime
joins the user namespace first and then has no rights over namespaces owned by the node's.
So a short-lived helper process (userns_helper.py) unshares all of them at once, waits
while the agent writes the id maps and pins each namespace, and, for a pod-wide PID
namespace, forks the infra process as its pid 1 before it exits.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import FailedPrecondition
from runtime.host import linux
from runtime.host.namespaces import NAMESPACE_FLAGS, unpin
from runtime.pods.model import UserNamespace

CLONE_NEWUSER = 0x10000000
_HELPER = str(Path(__file__).with_name("userns_helper.py"))


@dataclass(frozen=True)
class InfraRequest:
    """The pod's infra process: pid 1 of a PID namespace owned by the user namespace."""

    argv: tuple[str, ...]
    env: Mapping[str, str]


@functools.cache
def supported() -> bool:
    """Whether this kernel gives pods user namespaces: it must allow them, and overlayfs must
    take idmapped layers (5.19) for the rootfs to be the container root's."""
    try:
        allowed = int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0
    except (OSError, ValueError):
        return False
    numbers = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return allowed and numbers is not None and (int(numbers[1]), int(numbers[2])) >= (5, 19)


def create_owned_namespaces(
    userns: UserNamespace, pins: Mapping[str, Path], infra: InfraRequest | None
) -> int | None:
    """Make a user namespace with userns's maps and, owned by it, one namespace of each other
    kind in pins (kind -> pin file); pin them all. Returns the infra's pid when asked for one.

    On failure nothing stays pinned and no process is left.
    """
    flags = CLONE_NEWUSER
    for kind in pins:
        if kind != "user":
            flags |= NAMESPACE_FLAGS[kind]
    argv = [sys.executable, "-I", "-S", _HELPER]
    env: dict[str, str] = {}
    if infra is not None:
        flags |= linux.CLONE_NEWPID
        # The helper has no PATH to search.
        command = [shutil.which(infra.argv[0]) or infra.argv[0], *infra.argv[1:]]
        argv += [str(flags), *command]
        env = dict(infra.env)
    else:
        argv.append(str(flags))
    helper = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    )
    assert helper.stdin is not None and helper.stdout is not None
    pinned: list[Path] = []
    try:
        _expect(helper.stdout.readline(), "u", "cannot create the pod's user namespace")
        _write_maps(helper.pid, userns)
        for kind, pin in pins.items():
            _pin(helper.pid, kind, pin)
            pinned.append(pin)
        helper.stdin.write("g\n")
        helper.stdin.flush()
        if infra is None:
            return None
        started = _expect(
            helper.stdout.readline(),
            "p",
            f"cannot start the pod's infra process {infra.argv[0]} "
            "(install catatonit or set runtime.infra_command)",
        )
        return int(started)
    except BaseException:
        helper.kill()
        for pin in pinned:
            unpin(pin)
        raise
    finally:
        helper.stdin.close()
        helper.stdout.close()
        helper.wait()


def _expect(line: str, tag: str, failure: str) -> str:
    """The rest of a helper line starting with tag; an error line or none raises."""
    line = line.strip()
    if line.startswith(tag):
        return line[len(tag) :]
    if line.startswith("e") and line[1:].isdigit():
        raise FailedPrecondition(f"{failure}: {os.strerror(int(line[1:]))}")
    raise FailedPrecondition(failure)


def _write_maps(pid: int, userns: UserNamespace) -> None:
    for name, mapping in (("uid_map", userns.uids), ("gid_map", userns.gids)):
        try:
            Path(f"/proc/{pid}/{name}").write_text(mapping.as_proc_map())
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot write the pod's {name} {mapping.as_proc_map().strip()!r}: {exc.strerror}"
            ) from None


def _pin(pid: int, kind: str, pin: Path) -> None:
    pin.parent.mkdir(parents=True, exist_ok=True)
    pin.touch(mode=0o444, exist_ok=True)
    try:
        linux.mount(f"/proc/{pid}/ns/{kind}", str(pin), None, linux.MS_BIND, None)
    except OSError:
        pin.unlink(missing_ok=True)
        raise
