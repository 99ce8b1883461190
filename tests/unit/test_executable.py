"""The container's command is looked up in the image as the runtime's exec will look."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.containers.executable import check_command
from runtime.containers.model import Mount
from runtime.errors import InvalidArgument

PATH = ["PATH=/usr/bin:/bin"]


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "app").mkdir()
    busybox = root / "bin" / "busybox"
    busybox.write_bytes(b"\x7fELF")
    busybox.chmod(0o755)
    os.symlink("busybox", root / "bin" / "sh")
    os.symlink("/bin/busybox", root / "usr" / "bin" / "env")
    (root / "app" / "run").write_text("#!/bin/sh\n")
    (root / "app" / "run").chmod(0o755)
    (root / "app" / "data.txt").write_text("not a program")
    # A link out of the rootfs must be resolved inside it, where nothing is there.
    os.symlink("/usr/bin/python3", root / "bin" / "py")
    return root


def check(root: Path, *args: str, cwd: str = "/", mounts: list[Mount] | None = None) -> None:
    check_command(root, list(args), env=PATH, cwd=cwd, mounts=mounts or [], image="img")


@pytest.mark.parametrize(
    ("args", "cwd"),
    [
        (["/bin/busybox"], "/"),
        (["/bin/sh", "-c", "true"], "/"),
        (["sh"], "/"),
        (["env"], "/"),
        (["./run"], "/app"),
        (["app/run"], "/"),
    ],
)
def test_commands_in_the_image_pass(rootfs: Path, args: list[str], cwd: str) -> None:
    check(rootfs, *args, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["/no/such/binary"], "'/no/such/binary'"),
        (["nosuch"], "'nosuch' is not an executable file in image img in PATH /usr/bin:/bin"),
        (["/app/data.txt"], "data.txt"),
        (["/app"], "'/app'"),
        (["py"], "'py'"),
    ],
)
def test_a_command_the_image_lacks_is_invalid_naming_it(
    rootfs: Path, args: list[str], named: str
) -> None:
    with pytest.raises(InvalidArgument, match=named):
        check(rootfs, *args)


def test_a_command_under_a_mount_is_not_looked_up(rootfs: Path) -> None:
    check(rootfs, "/opt/tools/run", mounts=[Mount("/opt/tools", "/srv/tools")])


def test_a_bare_name_with_a_mounted_path_dir_is_not_looked_up(rootfs: Path) -> None:
    check(rootfs, "tool", mounts=[Mount("/usr/bin", "/srv/bin")])


def test_without_path_the_runtimes_default_is_searched(rootfs: Path) -> None:
    check_command(rootfs, ["sh"], env=[], cwd="/", mounts=[], image="img")
