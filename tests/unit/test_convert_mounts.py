"""Mounts and image specs across the CRI: mount_options in and back out, checked against the
allowlist, and ImageSpec.image_ref wherever the agent knows the image."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cri.convert.containers import container_status_to_proto, container_to_proto
from cri.convert.images import image_to_proto
from cri.convert.mounts import mount_from_proto, mounts_to_proto
from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument
from runtime.images.model import Image
from tests.unit.builders import VOLUME_IMAGE_ID, VOLUME_IMAGE_REF, container


def bind(options: list[str]) -> pb.Mount:
    return pb.Mount(container_path="/data", host_path="/srv", mount_options=options)


def test_allowed_options_are_kept_in_order_without_repeats() -> None:
    mount = mount_from_proto(0, bind(["nosuid", "noexec", "nosuid", "relatime"]))

    assert mount.mount_options == ["nosuid", "noexec", "relatime"]


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ("bind", "allowed: "),
        ("rbind", "allowed: "),
        ("remount", "allowed: "),
        ("size=1m", "allowed: "),
        ("NOEXEC", "allowed: "),
        ("", "allowed: "),
        ("ro", "readonly field"),
        ("rw", "readonly field"),
        ("rshared", "propagation field"),
        ("private", "propagation field"),
        ("exec", "host mount's flag"),
        ("suid", "host mount's flag"),
    ],
)
def test_an_option_outside_the_allowlist_names_the_mount_and_the_option(
    option: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        mount_from_proto(2, bind(["nodev", option]))

    message = str(raised.value)
    assert message.startswith("config.mounts[2].mount_options: ")
    assert repr(option) in message
    assert reason in message


def test_two_atime_modes_contradict() -> None:
    with pytest.raises(InvalidArgument, match="noatime and strictatime contradict"):
        mount_from_proto(0, bind(["noatime", "nodiratime", "strictatime"]))


def test_an_image_volume_takes_options_too() -> None:
    request = pb.Mount(container_path="/vol", image=pb.ImageSpec(image="vol:1"), readonly=True)
    request.mount_options.append("nodev")

    assert mount_from_proto(0, request).mount_options == ["nodev"]


def test_status_mounts_report_options_and_the_volume_images_digest() -> None:
    data, vol = mounts_to_proto(container("c1"))

    assert list(data.mount_options) == ["noexec"]
    assert not data.HasField("image")
    assert vol.image.image == VOLUME_IMAGE_ID
    assert vol.image.image_ref == VOLUME_IMAGE_REF


def test_a_volume_recorded_before_image_refs_reports_its_id() -> None:
    old = replace(container("c1"), volume_image_refs={})

    assert mounts_to_proto(old)[1].image.image_ref == VOLUME_IMAGE_ID


def test_a_containers_image_spec_carries_its_digest_reference() -> None:
    made = container("c1")
    listed, status = container_to_proto(made), container_status_to_proto(made)

    assert listed.image.image == status.image.image == "busybox"
    assert status.image.image_ref == made.image_ref
    # The listing carries it once, in Container.image_ref.
    assert (listed.image.image_ref, listed.image_ref) == ("", made.image_ref)


IMAGE_ID = "sha256:" + "f" * 64
REPO_DIGEST = "registry.test/x@sha256:" + "e" * 64


@pytest.mark.parametrize(("digests", "expected"), [((REPO_DIGEST,), REPO_DIGEST), ((), IMAGE_ID)])
def test_an_images_spec_carries_its_repo_digest_else_its_id(
    digests: tuple[str, ...], expected: str
) -> None:
    image = Image(IMAGE_ID, "sha256:" + "0" * 64, ("registry.test/x:1",), digests, (), 1, "", 1)

    spec = image_to_proto(image, pinned=False).spec

    assert (spec.image, spec.image_ref) == (IMAGE_ID, expected)
