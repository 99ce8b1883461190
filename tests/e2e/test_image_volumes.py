"""Image volumes: a CRI mount naming an image mounts that image's rootfs read-only."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import (
    Pod,
    container_config,
    exec_sync,
    list_containers,
    pulled,
    remove,
    status,
)
from tests.e2e.kernel import mounts_under
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until


@pytest.fixture
def images(agent: Agent, registry: LocalRegistry) -> tuple[str, str]:
    """(the container's image, the volume's image: the multi-layer one with /data files)."""
    return pulled(agent, registry), pulled(agent, registry, "multi")


def with_volume(image: str, volume: str, sub_path: str = "", readonly: bool = True) -> Any:
    config = container_config(image, ["sleep", "60"])
    config.mounts.append(
        pb.Mount(
            container_path="/vol",
            image=pb.ImageSpec(image=volume),
            image_sub_path=sub_path,
            readonly=readonly,
        )
    )
    return config


def test_an_image_volume_is_there_and_read_only(agent: Agent, images: tuple[str, str]) -> None:
    image, volume = images
    pod = Pod(agent)

    container_id = pod.run(with_volume(image, volume))

    listing = exec_sync(agent, container_id, ["ls", "/vol/bin"]).stdout.decode()
    assert "busybox" in listing
    write = exec_sync(agent, container_id, ["touch", "/vol/new"])
    assert write.exit_code != 0
    assert b"Read-only" in write.stderr
    (mount,) = status(agent, container_id).status.mounts
    volume_image = agent.images.ImageStatus(
        pb.ImageStatusRequest(image=pb.ImageSpec(image=volume))
    ).image
    assert mount.image.image == volume_image.id
    # What the kubelet reports as the volume's imageRef: a digest, like a container's imageID.
    assert mount.image.image_ref == volume_image.repo_digests[0]


def test_a_sub_path_mounts_only_that_directory(agent: Agent, images: tuple[str, str]) -> None:
    image, volume = images
    pod = Pod(agent)

    container_id = pod.run(with_volume(image, volume, sub_path="etc"))

    assert b"passwd" in exec_sync(agent, container_id, ["ls", "/vol"]).stdout


@pytest.mark.parametrize(
    ("sub_path", "readonly", "text"),
    [
        ("no/such/dir", True, "image_sub_path"),
        ("../../..", True, "image_sub_path"),
        ("", False, "readonly"),
    ],
)
def test_bad_image_volumes_fail_and_leave_nothing(
    agent: Agent, images: tuple[str, str], sub_path: str, readonly: bool, text: str
) -> None:
    image, volume = images
    pod = Pod(agent)
    config = with_volume(image, volume, sub_path, readonly)

    assert_rpc_error(lambda: pod.create(config), grpc.StatusCode.INVALID_ARGUMENT, text)

    assert list_containers(agent) == []
    volumes = agent.run_dir / "containers"
    assert not volumes.exists() or list(volumes.iterdir()) == []


def test_a_volume_image_in_use_keeps_its_content(agent: Agent, images: tuple[str, str]) -> None:
    image, volume = images
    pod = Pod(agent)
    container_id = pod.run(with_volume(image, volume))

    agent.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=volume)))

    assert b"busybox" in exec_sync(agent, container_id, ["ls", "/vol/bin"]).stdout
    remove(agent, container_id)
    # The host clean-up runs after RemoveContainer answers.
    assert wait_until(lambda: mounts_under(agent.run_dir / "containers") == [])
