"""ImageService: PullImage, ListImages, ImageStatus, RemoveImage and ImageFsInfo."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri.handlers import Handlers
from cri.unimplemented import UnimplementedFallback
from metrics.agent_metrics import record_image_pull
from runtime.errors import InvalidArgument
from runtime.host.disk_usage import DiskUsage
from runtime.images.model import Image
from runtime.images.registry import Credentials


def _fs_usage(usage: DiskUsage, timestamp_ns: int) -> Any:
    return pb.FilesystemUsage(
        timestamp=timestamp_ns,
        fs_id=pb.FilesystemIdentifier(mountpoint=str(usage.path)),
        used_bytes=pb.UInt64Value(value=usage.used_bytes),
        inodes_used=pb.UInt64Value(value=usage.inodes_used),
    )


def credentials_from_proto(auth: Any) -> Credentials:
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


def image_to_proto(image: Image, pinned: bool) -> Any:
    return pb.Image(
        id=image.id,
        repo_tags=list(image.repo_tags),
        repo_digests=list(image.repo_digests),
        size=image.size,
        spec=pb.ImageSpec(image=image.id),
        pinned=pinned,
        **_user_fields(image.user),
    )


def _image_name(spec: Any, field: str) -> str:
    if not spec.image:
        raise InvalidArgument(f"{field}.image is empty")
    return str(spec.image)


class ImageService(Handlers, UnimplementedFallback):
    service_name = "runtime.v1.ImageService"

    async def PullImage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name = _image_name(request.image, "image")
        started = time.monotonic()
        image = await self.runtime.images.pull(name, credentials_from_proto(request.auth))
        record_image_pull(image.size, time.monotonic() - started)
        return pb.PullImageResponse(image_ref=image.id)

    async def ListImages(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        images = self.runtime.images
        found = images.select(request.filter.image.image)
        return pb.ListImagesResponse(images=[image_to_proto(i, images.is_pinned(i)) for i in found])

    async def ImageStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        images = self.runtime.images
        image = images.find(_image_name(request.image, "image"))
        if image is None:
            # Kubelet learns that an image is missing from an empty answer, not an error.
            return pb.ImageStatusResponse()
        info = {}
        if request.verbose:
            config = await asyncio.to_thread(images.config, image)
            info["info"] = json.dumps(
                {
                    "imageSpec": config,
                    "manifestDigest": image.manifest_digest,
                    "chainIDs": image.chain_ids(),
                    "lowerDirs": [str(d) for d in images.lower_dirs(image)],
                }
            )
        return pb.ImageStatusResponse(
            image=image_to_proto(image, images.is_pinned(image)), info=info
        )

    async def RemoveImage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.runtime.images.remove(_image_name(request.image, "image"))
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        images = await asyncio.to_thread(self.runtime.image_fs_usage)
        containers = await asyncio.to_thread(self.runtime.container_fs_usage)
        now = time.time_ns()
        return pb.ImageFsInfoResponse(
            image_filesystems=[_fs_usage(images, now)],
            container_filesystems=[_fs_usage(containers, now)],
        )
