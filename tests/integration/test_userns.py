"""The pod user namespace helper on the real kernel: maps written, namespaces owned by the new
user namespace, the infra as pid 1, and nothing left behind when a step fails."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from network.netns import is_pinned
from runtime.errors import FailedPrecondition
from runtime.host.namespaces import unpin
from runtime.host.processes import is_running, kill_and_wait, start_ticks
from runtime.pods.model import IdMapping, InfraProcess, UserNamespace
from runtime.pods.userns import InfraRequest, create_owned_namespaces

NS_GET_USERNS = 0xB701
MAPPING = UserNamespace(IdMapping(3_000_000, 0, 65536), IdMapping(3_100_000, 0, 65536))


@pytest.fixture
def pins(tmp_path: Path) -> Iterator[dict[str, Path]]:
    paths = {kind: tmp_path / kind for kind in ("user", "net", "uts", "ipc")}
    try:
        yield paths
    finally:
        for pin in paths.values():
            unpin(pin)


def owner_of(pin: Path) -> tuple[int, int]:
    """(dev, inode) of the user namespace owning the namespace pinned at pin."""
    fd = os.open(pin, os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
        try:
            st = os.fstat(owner)
            return st.st_dev, st.st_ino
        finally:
            os.close(owner)
    finally:
        os.close(fd)


def test_the_namespaces_are_pinned_mapped_and_owned_by_the_new_user_namespace(
    pins: dict[str, Path],
) -> None:
    assert create_owned_namespaces(MAPPING, pins, None) is None

    assert all(is_pinned(pin) for pin in pins.values())
    user = os.stat(pins["user"])
    assert {owner_of(pins[k]) for k in ("net", "uts", "ipc")} == {(user.st_dev, user.st_ino)}
    maps = subprocess.run(
        ["nsenter", f"--user={pins['user']}", "cat", "/proc/self/uid_map", "/proc/self/gid_map"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert maps == ["0", "3000000", "65536", "0", "3100000", "65536"]


def test_the_infra_is_pid_1_of_a_pid_namespace_in_the_user_namespace(
    pins: dict[str, Path],
) -> None:
    pid = create_owned_namespaces(MAPPING, pins, InfraRequest(("sleep", "30"), {"MARK": "x"}))
    assert pid is not None
    infra = InfraProcess(pid, start_ticks(pid))
    try:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        assert status["NSpid"].split()[-1] == "1"
        assert status["Uid"].split()[0] == "3000000"
        assert b"MARK=x" in Path(f"/proc/{pid}/environ").read_bytes()
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(pins["net"]).st_ino
    finally:
        kill_and_wait(infra)
    assert not is_running(infra)


def test_an_infra_that_cannot_start_leaves_nothing_pinned(pins: dict[str, Path]) -> None:
    with pytest.raises(FailedPrecondition, match="No such file"):
        create_owned_namespaces(MAPPING, pins, InfraRequest(("/nonexistent/infra",), {}))

    assert not any(pin.exists() for pin in pins.values())


def test_maps_the_kernel_refuses_leave_nothing_pinned(pins: dict[str, Path]) -> None:
    overflowing = UserNamespace(IdMapping(2**32 - 10, 0, 65536), MAPPING.gids)

    with pytest.raises(FailedPrecondition, match="uid_map"):
        create_owned_namespaces(overflowing, pins, None)

    assert not any(pin.exists() for pin in pins.values())
