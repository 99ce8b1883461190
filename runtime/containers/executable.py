"""Whether a container's command exists in its image, found the way the OCI runtime's exec
will look for it (an absolute or relative path as given, a bare name along PATH).

Checked at CreateContainer so that a missing binary is a clear INVALID_ARGUMENT naming it,
not a start that fails with the runtime's raw stderr. A path a mount could provide is not
checked: the mount is not there yet.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from runtime.containers.image_user import join_in_root
from runtime.containers.model import Mount
from runtime.errors import InvalidArgument

# What crun and runc search when the process has no PATH.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def check_command(
    rootfs: Path, args: list[str], *, env: list[str], cwd: str, mounts: list[Mount], image: str
) -> None:
    program = args[0]
    if "/" in program:
        candidates = [posixpath.normpath(posixpath.join(cwd or "/", program))]
    else:
        path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
        candidates = [posixpath.join(d or ".", program) for d in path.split(":")]
        candidates = [posixpath.normpath(posixpath.join(cwd or "/", c)) for c in candidates]
    if any(_under_a_mount(c, mounts) for c in candidates):
        return
    if any(_is_executable(join_in_root(rootfs, c)) for c in candidates):
        return
    where = "" if "/" in program else f" in PATH {path}"
    raise InvalidArgument(
        f"command {program!r} is not an executable file in image {image}{where}: "
        "fix config.command (or the image's entrypoint)"
    )


def _under_a_mount(path: str, mounts: list[Mount]) -> bool:
    return any(
        path == m.container_path or path.startswith(m.container_path.rstrip("/") + "/")
        for m in mounts
    )


def _is_executable(path: Path) -> bool:
    try:
        # join_in_root resolved every symlink inside the rootfs: one left would lead out.
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and bool(mode & 0o111)
