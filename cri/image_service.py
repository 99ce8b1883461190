"""ImageService: PullImage, ListImages, StreamImages, ImageStatus, RemoveImage and ImageFsInfo."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from cri.convert import images as convert
from cri.convert.info import verbose_info
from cri.handlers import Context, Handlers
from cri.paging import pages
from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from metrics.agent_metrics import record_image_pull


class ImageService(Handlers, api_pb2_grpc.ImageServiceServicer):
    async def PullImage(
        self, request: pb.PullImageRequest, context: Context
    ) -> pb.PullImageResponse:
        name = convert.image_name(request)
        started = time.monotonic()
        image = await self.runtime.images.pull(name, convert.credentials_from_proto(request.auth))
        record_image_pull(image.size, time.monotonic() - started)
        return pb.PullImageResponse(image_ref=image.id)

    async def ListImages(
        self, request: pb.ListImagesRequest, context: Context
    ) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=self._images(request))

    async def StreamImages(
        self, request: pb.StreamImagesRequest, context: Context
    ) -> AsyncIterator[pb.StreamImagesResponse]:
        for page in pages(self._images(request)):
            yield pb.StreamImagesResponse(images=page)

    def _images(self, request: pb.ListImagesRequest | pb.StreamImagesRequest) -> list[pb.Image]:
        images = self.runtime.images
        found = images.select(request.filter.image.image)
        return [convert.image_to_proto(i, images.is_pinned(i)) for i in found]

    async def ImageStatus(
        self, request: pb.ImageStatusRequest, context: Context
    ) -> pb.ImageStatusResponse:
        images = self.runtime.images
        image = images.find(convert.image_name(request))
        if image is None:
            # Kubelet learns that an image is missing from an empty answer, not an error.
            return pb.ImageStatusResponse()
        info = {}
        if request.verbose:
            details = await asyncio.to_thread(images.verbose_info, image)
            info = verbose_info(details, sort_keys=False)
        return pb.ImageStatusResponse(
            image=convert.image_to_proto(image, images.is_pinned(image)), info=info
        )

    async def RemoveImage(
        self, request: pb.RemoveImageRequest, context: Context
    ) -> pb.RemoveImageResponse:
        await self.runtime.images.remove(convert.image_name(request))
        return pb.RemoveImageResponse()

    async def ImageFsInfo(
        self, request: pb.ImageFsInfoRequest, context: Context
    ) -> pb.ImageFsInfoResponse:
        images = await asyncio.to_thread(self.runtime.image_fs_usage)
        containers = await asyncio.to_thread(self.runtime.container_fs_usage)
        now = time.time_ns()
        return pb.ImageFsInfoResponse(
            image_filesystems=[convert.fs_usage_to_proto(images, now)],
            container_filesystems=[convert.fs_usage_to_proto(containers, now)],
        )
