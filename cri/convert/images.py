"""Images: names and credentials in; images and image filesystems out."""

from __future__ import annotations

from typing import Any

from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument
from runtime.host.disk_usage import DiskUsage
from runtime.images.model import Image
from runtime.images.registry import Credentials


def image_name(
    request: pb.PullImageRequest | pb.ImageStatusRequest | pb.RemoveImageRequest,
) -> str:
    if not request.image.image:
        raise InvalidArgument("image.image is empty")
    return str(request.image.image)


def credentials_from_proto(auth: pb.AuthConfig) -> Credentials:
    """PullImageRequest.auth; `auth` (base64 user:password) stands in for the pair."""
    if auth.auth and not auth.username:
        try:
            decoded = Credentials.from_auth(auth.auth)
        except ValueError as exc:
            raise InvalidArgument(f"auth.auth: {exc}") from None
    else:
        decoded = Credentials(username=auth.username, password=auth.password)
    return Credentials(
        username=decoded.username,
        password=decoded.password,
        identity_token=auth.identity_token,
        registry_token=auth.registry_token,
    )


def _user_fields(user: str) -> dict[str, Any]:
    """The config's User as CRI reports it: a numeric user is a uid, else a name."""
    name = user.split(":", 1)[0]
    if not name:
        return {}
    if name.isdigit():
        return {"uid": pb.Int64Value(value=int(name))}
    return {"username": name}


def image_to_proto(image: Image, pinned: bool) -> pb.Image:
    return pb.Image(
        id=image.id,
        repo_tags=list(image.repo_tags),
        repo_digests=list(image.repo_digests),
        size=image.size,
        spec=pb.ImageSpec(image=image.id, image_ref=image.digest_reference),
        pinned=pinned,
        **_user_fields(image.user),
    )


def fs_usage_to_proto(usage: DiskUsage, timestamp_ns: int) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(
        timestamp=timestamp_ns,
        fs_id=pb.FilesystemIdentifier(mountpoint=str(usage.path)),
        used_bytes=pb.UInt64Value(value=usage.used_bytes),
        inodes_used=pb.UInt64Value(value=usage.inodes_used),
    )
