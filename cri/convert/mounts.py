"""Container mounts and devices: host binds, image volumes and their propagation."""

from __future__ import annotations

from cri.convert.enums import enum_value
from cri.convert.userns import mount_mappings
from cri.proto import api_pb2 as pb
from runtime.containers.model import Container, Device, Mount, Propagation
from runtime.containers.mount_options import checked_mount_options
from runtime.errors import InvalidArgument

_PROPAGATION = {
    pb.PROPAGATION_PRIVATE: Propagation.PRIVATE,
    pb.PROPAGATION_HOST_TO_CONTAINER: Propagation.HOST_TO_CONTAINER,
    pb.PROPAGATION_BIDIRECTIONAL: Propagation.BIDIRECTIONAL,
}
_PROPAGATION_TO_PB = {v: k for k, v in _PROPAGATION.items()}


def mount_from_proto(index: int, mount: pb.Mount) -> Mount:
    field = f"config.mounts[{index}]"
    if not mount.container_path.startswith("/"):
        raise InvalidArgument(f"{field}.container_path {mount.container_path!r} is not absolute")
    propagation = enum_value(_PROPAGATION, mount.propagation, f"{field}.propagation")
    if mount.recursive_read_only and (not mount.readonly or propagation is not Propagation.PRIVATE):
        raise InvalidArgument(f"{field}.recursive_read_only needs readonly and PROPAGATION_PRIVATE")
    options = checked_mount_options(list(mount.mount_options), f"{field}.mount_options")
    image = mount.image.image if mount.HasField("image") else ""
    if image:
        if not mount.readonly:
            raise InvalidArgument(f"{field}: an image volume must be readonly")
        return Mount(
            mount.container_path,
            "",
            True,
            propagation,
            image,
            mount.image_sub_path,
            mount_options=options,
        )
    if not mount.host_path.startswith("/"):
        raise InvalidArgument(f"{field}.host_path {mount.host_path!r} is not absolute")
    return Mount(
        mount.container_path,
        mount.host_path,
        mount.readonly,
        propagation,
        recursive_read_only=mount.recursive_read_only,
        idmap=mount_mappings(mount, field),
        mount_options=options,
    )


def mounts_to_proto(container: Container) -> list[pb.Mount]:
    """As created; an image volume names the image id it resolved to."""
    return [
        pb.Mount(
            container_path=m.container_path,
            host_path=m.host_path,
            readonly=m.readonly,
            propagation=_PROPAGATION_TO_PB[m.propagation],
            image=_volume_image_to_proto(container, m.container_path) if m.image else None,
            image_sub_path=m.image_sub_path,
            mount_options=m.mount_options,
        )
        for m in container.config.mounts
    ]


def _volume_image_to_proto(container: Container, path: str) -> pb.ImageSpec | None:
    image_id = container.volume_images.get(path, "")
    return pb.ImageSpec(image=image_id, image_ref=container.volume_image_refs.get(path, image_id))


def device_from_proto(device: pb.Device) -> Device:
    return Device(device.container_path, device.host_path, device.permissions or "rwm")
