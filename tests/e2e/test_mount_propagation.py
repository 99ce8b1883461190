"""Bind mount propagation and recursive read-only requests: mounts made on one side appear on
the other as the request says, and requests that cannot work fail clearly."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, exec_sync, pulled
from tests.e2e.kernel import mount_at
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory that is a shared mount of its own (the host's / here is private)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    try:
        yield shared
    finally:
        subprocess.run(["umount", "-R", "-l", str(shared)], check=False)


def with_mount(image: str, host: Path, propagation: Any, **security: Any) -> Any:
    config = container_config(
        image,
        ["sleep", "60"],
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(**security)
        ),
    )
    config.mounts.append(
        pb.Mount(container_path="/vol", host_path=str(host), propagation=propagation)
    )
    return config


def test_host_to_container_shows_mounts_made_later_on_the_host(
    agent: Agent, image: str, shared_dir: Path
) -> None:
    pod = Pod(agent)
    container_id = pod.run(with_mount(image, shared_dir, pb.PROPAGATION_HOST_TO_CONTAINER))
    later = shared_dir / "later"
    later.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(later)], check=True)
    (later / "seen").write_text("from the host")

    assert wait_until(
        lambda: (
            b"from the host" in exec_sync(agent, container_id, ["cat", "/vol/later/seen"]).stdout
        )
    )


def test_bidirectional_shows_mounts_made_in_the_container_on_the_host(
    agent: Agent, image: str, shared_dir: Path
) -> None:
    pod = Pod(agent)
    (shared_dir / "inner").mkdir()
    config = with_mount(image, shared_dir, pb.PROPAGATION_BIDIRECTIONAL, privileged=True)
    container_id = pod.run(config)

    made = exec_sync(agent, container_id, ["sh", "-c", "mount -t tmpfs none /vol/inner"])

    assert made.exit_code == 0, made.stderr
    assert wait_until(lambda: mount_at(str(shared_dir / "inner")) is not None)


@pytest.mark.parametrize(
    "propagation", [pb.PROPAGATION_HOST_TO_CONTAINER, pb.PROPAGATION_BIDIRECTIONAL]
)
def test_propagation_from_a_private_mount_is_refused(
    agent: Agent, image: str, tmp_path: Path, propagation: Any
) -> None:
    pod = Pod(agent)
    private = tmp_path / "private"
    private.mkdir()
    subprocess.run(["mount", "--bind", str(private), str(private)], check=True)
    subprocess.run(["mount", "--make-private", str(private)], check=True)
    try:
        assert_rpc_error(
            lambda: pod.create(with_mount(image, private, propagation)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "propagation",
        )
    finally:
        subprocess.run(["umount", "-l", str(private)], check=False)


def test_a_symlinked_host_path_is_resolved_on_the_host(
    agent: Agent, image: str, tmp_path: Path
) -> None:
    target = tmp_path / "real"
    target.mkdir()
    (target / "file").write_text("through the link")
    link = tmp_path / "link"
    link.symlink_to(target)
    pod = Pod(agent)

    container_id = pod.run(with_mount(image, link, pb.PROPAGATION_PRIVATE))

    assert exec_sync(agent, container_id, ["cat", "/vol/file"]).stdout == b"through the link"


@pytest.mark.parametrize(
    "case",
    [
        (False, pb.PROPAGATION_PRIVATE, grpc.StatusCode.INVALID_ARGUMENT),
        (True, pb.PROPAGATION_HOST_TO_CONTAINER, grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["writable", "not-private"],
)
def test_recursive_read_only_requests_follow_the_cri_rules(
    agent: Agent, image: str, tmp_path: Path, case: tuple[bool, Any, Any]
) -> None:
    readonly, propagation, code = case
    pod = Pod(agent)
    config = container_config(image, ["sleep", "60"])
    config.mounts.append(
        pb.Mount(
            container_path="/vol",
            host_path=str(tmp_path),
            readonly=readonly,
            propagation=propagation,
            recursive_read_only=True,
        )
    )

    assert_rpc_error(lambda: pod.create(config), code, "recursive_read_only")


@pytest.fixture
def tree_with_submount(tmp_path: Path) -> Iterator[Path]:
    """A host directory with a writable tmpfs mounted inside it."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tree / "sub")], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["umount", "-R", "-l", str(tree / "sub")], check=False)


def read_only_mount(image: str, host: Path, *, recursive: bool) -> Any:
    config = container_config(image, ["sleep", "60"])
    config.mounts.append(
        pb.Mount(
            container_path="/vol",
            host_path=str(host),
            readonly=True,
            propagation=pb.PROPAGATION_PRIVATE,
            recursive_read_only=recursive,
        )
    )
    return config


def touch(agent: Agent, container_id: str, path: str) -> Any:
    return exec_sync(agent, container_id, ["sh", "-c", f": > {path}"])


@pytest.mark.parametrize("handler", ["crun", "runc"])
def test_a_recursive_read_only_mount_makes_submounts_read_only(
    agent: Agent, image: str, tree_with_submount: Path, handler: str
) -> None:
    pod = Pod(agent, runtime_handler=handler)

    container_id = pod.run(read_only_mount(image, tree_with_submount, recursive=True))

    written = touch(agent, container_id, "/vol/sub/file")
    assert written.exit_code != 0
    assert b"Read-only file system" in written.stderr
    assert touch(agent, container_id, "/vol/file").exit_code != 0
    assert not (tree_with_submount / "sub" / "file").exists()


def test_a_plain_read_only_mount_leaves_submounts_writable(
    agent: Agent, image: str, tree_with_submount: Path
) -> None:
    pod = Pod(agent)

    container_id = pod.run(read_only_mount(image, tree_with_submount, recursive=False))

    assert touch(agent, container_id, "/vol/sub/file").exit_code == 0
    assert (tree_with_submount / "sub" / "file").exists()


def test_removing_a_recursive_read_only_container_leaves_the_host_tree_alone(
    agent: Agent, image: str, tree_with_submount: Path
) -> None:
    (tree_with_submount / "sub" / "kept").write_text("still here")
    pod = Pod(agent)
    container_id = pod.run(read_only_mount(image, tree_with_submount, recursive=True))

    agent.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=container_id))

    # The host clean-up runs after RemoveContainer answers.
    assert wait_until(lambda: not _mount_lines_naming(container_id))
    assert (tree_with_submount / "sub" / "kept").read_text() == "still here"


def _mount_lines_naming(container_id: str) -> list[str]:
    return [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if container_id in line
    ]


@pytest.mark.parametrize("handler", ["crun", "runc"])
def test_a_recursive_read_only_mount_does_not_pin_the_host_tree(
    agent: Agent, image: str, tree_with_submount: Path, handler: str
) -> None:
    """Regression: the read-only copy staged on the host stayed mounted while the container
    ran, so the kubelet could not remove the volume's directory (EBUSY)."""
    pod = Pod(agent, runtime_handler=handler)
    container_id = pod.run(read_only_mount(image, tree_with_submount, recursive=True))

    subprocess.run(["umount", str(tree_with_submount / "sub")], check=True)
    (tree_with_submount / "sub").rmdir()

    staged = f"{container_id}/volumes"
    assert staged not in Path("/proc/self/mountinfo").read_text()
    assert exec_sync(agent, container_id, ["ls", "/vol"]).exit_code == 0
    written = touch(agent, container_id, "/vol/file")
    assert written.exit_code != 0
    assert b"Read-only file system" in written.stderr
    tree_with_submount.rmdir()
