from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.containers.image_user import (
    join_in_root,
    parse_image_config,
    read_in_root,
    resolve_user,
)
from runtime.containers.model import ContainerSecurity, ImageRuntimeConfig, ProcessUser
from runtime.errors import InvalidArgument

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment, and a broken line below
broken:x:notanumber:0::/:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1001:1001:::/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
audio:x:29:app
app:x:1000:
video:x:44:someoneelse
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def test_image_config_fields_are_read_from_the_config_object() -> None:
    raw = {
        "architecture": "amd64",
        "config": {
            "Entrypoint": ["/bin/app"],
            "Cmd": ["--serve"],
            "Env": ["PATH=/bin", "A=b=c"],
            "WorkingDir": "/srv",
            "User": "app:audio",
            "StopSignal": "SIGQUIT",
        },
    }

    assert parse_image_config(raw) == ImageRuntimeConfig(
        entrypoint=["/bin/app"],
        cmd=["--serve"],
        env=["PATH=/bin", "A=b=c"],
        working_dir="/srv",
        user="app:audio",
        stop_signal="SIGQUIT",
    )


@pytest.mark.parametrize("raw", [{}, {"config": None}, {"config": {"Cmd": None, "Env": None}}])
def test_missing_or_null_image_config_is_empty(raw: dict[str, object]) -> None:
    assert parse_image_config(raw) == ImageRuntimeConfig()


def test_run_as_user_wins_and_takes_the_gid_and_home_from_passwd(rootfs: Path) -> None:
    security = ContainerSecurity(run_as_user=1000, run_as_username="daemon")

    assert resolve_user(rootfs, security, "root") == ProcessUser(
        uid=1000, gid=1000, additional_gids=[1000, 10, 29], username="app", home="/home/app"
    )


def test_run_as_user_not_in_passwd_gets_gid_0_and_home_slash(rootfs: Path) -> None:
    assert resolve_user(rootfs, ContainerSecurity(run_as_user=4242), "") == ProcessUser(
        uid=4242, gid=0, additional_gids=[0]
    )


def test_run_as_username_is_looked_up(rootfs: Path) -> None:
    user = resolve_user(rootfs, ContainerSecurity(run_as_username="daemon"), "app")

    assert (user.uid, user.gid, user.username, user.home) == (1, 1, "daemon", "/usr/sbin")


def test_unknown_run_as_username_is_rejected_naming_the_field(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument) as error:
        resolve_user(rootfs, ContainerSecurity(run_as_username="nobody2"), "")

    assert str(error.value) == (
        "config.linux.security_context.run_as_username 'nobody2' is not in the image's /etc/passwd"
    )


def test_run_as_group_without_a_user_is_rejected(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="run_as_group"):
        resolve_user(rootfs, ContainerSecurity(run_as_group=5), "app")


def test_run_as_group_overrides_the_primary_gid(rootfs: Path) -> None:
    user = resolve_user(rootfs, ContainerSecurity(run_as_user=1000, run_as_group=10), "")

    assert (user.gid, user.additional_gids) == (10, [10, 29])


@pytest.mark.parametrize(
    ("image_user", "uid", "gid", "username"),
    [
        ("", 0, 0, "root"),
        ("app", 1000, 1000, "app"),
        ("1000", 1000, 1000, "app"),
        ("5555", 5555, 0, ""),
        ("app:audio", 1000, 29, "app"),
        ("app:77", 1000, 77, "app"),
        ("1000:10", 1000, 10, "app"),
        ("5555:audio", 5555, 29, ""),
    ],
)
def test_image_user_forms(rootfs: Path, image_user: str, uid: int, gid: int, username: str) -> None:
    user = resolve_user(rootfs, ContainerSecurity(), image_user)

    assert (user.uid, user.gid, user.username) == (uid, gid, username)


@pytest.mark.parametrize(
    ("image_user", "message"),
    [
        ("ghost", "user 'ghost' is not in the image's /etc/passwd"),
        ("app:ghosts", "group 'ghosts' is not in the image's /etc/group"),
    ],
)
def test_image_user_with_unknown_names_is_rejected(
    rootfs: Path, image_user: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve_user(rootfs, ContainerSecurity(), image_user)


def test_groups_are_the_primary_then_the_requested_then_the_images_without_duplicates(
    rootfs: Path,
) -> None:
    security = ContainerSecurity(run_as_username="app", supplemental_groups=[29, 1000, 7, 7])

    assert resolve_user(rootfs, security, "").additional_gids == [1000, 29, 7, 10]


def test_strict_supplemental_groups_leave_out_the_images_memberships(rootfs: Path) -> None:
    security = ContainerSecurity(
        run_as_username="app", supplemental_groups=[29, 7], strict_supplemental_groups=True
    )

    assert resolve_user(rootfs, security, "").additional_gids == [1000, 29, 7]


def test_empty_home_in_passwd_means_slash(rootfs: Path) -> None:
    assert resolve_user(rootfs, ContainerSecurity(run_as_user=1001), "").home == "/"


def test_missing_account_files_mean_no_accounts(tmp_path: Path) -> None:
    user = resolve_user(tmp_path, ContainerSecurity(), "123:456")

    assert user == ProcessUser(uid=123, gid=456, additional_gids=[456])


def test_absolute_symlink_to_the_hosts_passwd_stays_inside_the_rootfs(tmp_path: Path) -> None:
    """An image's /etc/passwd -> /etc/passwd must not read the host's file."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "real" / "passwd").write_text("inside:x:77:77::/in:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to("/real/passwd")
    (root / "etc" / "group").symlink_to("/nonexistent/group")

    user = resolve_user(root, ContainerSecurity(), "inside")

    assert (user.uid, user.home) == (77, "/in")
    assert read_in_root(root, "etc/group") == ""


def test_dotdot_and_relative_symlinks_cannot_climb_out_of_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to("../../../../../../../etc/hostname")

    assert join_in_root(root, "etc/passwd") == root / "etc" / "hostname"
    assert join_in_root(root, "../../etc/shadow") == root / "etc" / "shadow"
    assert read_in_root(root, "etc/passwd") == ""


def test_a_fifo_as_passwd_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(root / "etc" / "passwd")

    assert read_in_root(root, "etc/passwd") == ""


def test_symlink_loops_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to("/etc/passwd")

    with pytest.raises(InvalidArgument, match="too many symlinks"):
        join_in_root(root, "etc/passwd")
