"""ImageService: ImageFsInfo now; pulls and the image store come with the images issue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri.handlers import Handlers
from cri.unimplemented import UnimplementedFallback
from runtime.agent import DiskUsage


def _fs_usage(usage: DiskUsage, timestamp_ns: int) -> Any:
    return pb.FilesystemUsage(
        timestamp=timestamp_ns,
        fs_id=pb.FilesystemIdentifier(mountpoint=str(usage.path)),
        used_bytes=pb.UInt64Value(value=usage.used_bytes),
        inodes_used=pb.UInt64Value(value=usage.inodes_used),
    )


class ImageService(Handlers, UnimplementedFallback):
    service_name = "runtime.v1.ImageService"

    async def ImageFsInfo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        images = await asyncio.to_thread(self.runtime.image_fs_usage)
        containers = await asyncio.to_thread(self.runtime.container_fs_usage)
        now = time.time_ns()
        return pb.ImageFsInfoResponse(
            image_filesystems=[_fs_usage(images, now)],
            container_filesystems=[_fs_usage(containers, now)],
        )
