"""The images as the CRI front sees them: pull, look up, list, remove, and collect garbage."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from runtime.images.content import ContentStore, LayerStore
from runtime.images.image_store import ImageStore
from runtime.images.model import Image
from runtime.images.puller import ImagePuller
from runtime.images.reference import InvalidReference, parse_reference
from runtime.images.registry import Credentials, RegistryClient
from runtime.settings import RuntimeSettings
from runtime.state.db import StateDB

log = structlog.get_logger("moorage.images")

_ID = re.compile(r"^(sha256:)?([0-9a-f]{64})$")
_ID_PREFIX = re.compile(r"^(sha256:)?([0-9a-f]{3,63})$")


class ImageManager:
    def __init__(self, settings: RuntimeSettings, db: StateDB) -> None:
        self.settings = settings.images
        self.content = ContentStore(settings.layout.content_dir)
        self.layers = LayerStore(settings.layout.layers_dir)
        self.store = ImageStore(db)
        self.client = RegistryClient(
            certs_dir=self.settings.certs_dir, retries=self.settings.pull_retries
        )
        self.puller = ImagePuller(self.settings, self.store, self.content, self.layers, self.client)
        # Image ids that containers use; the containers layer replaces this.
        self.in_use: Callable[[], set[str]] = set
        # Waits for container removals whose clean-up is under way; theirs too.
        self.removals_settled: Callable[[], Awaitable[None]] = _nothing_pending
        self._pinned = {_normalized(name) for name in self.settings.pinned_images}
        self._gc_lock = asyncio.Lock()

    async def pull(self, text: str, creds: Credentials) -> Image:
        try:
            return await self.puller.pull(text, creds)
        except BaseException:
            # Whatever the failed pull fetched or unpacked belongs to no image now.
            await asyncio.shield(self.collect_garbage())
            raise

    def find(self, text: str) -> Image | None:
        """An image by id, unique id prefix, or any of its names (normalised)."""
        exact = _ID.match(text)
        if exact:
            return self.store.get(f"sha256:{exact.group(2)}")
        try:
            reference = parse_reference(text)
        except InvalidReference:
            reference = None
        if reference is not None:
            names = [reference.name_with_digest] if reference.digest else []
            names += [reference.name_with_tag] if reference.tag else []
            for name in names:
                image = self.store.by_name(name)
                if image is not None:
                    return image
        prefix = _ID_PREFIX.match(text)
        if prefix:
            matches = [i for i in self.store.all() if i.id[7:].startswith(prefix.group(2))]
            if len(matches) == 1:
                return matches[0]
        return None

    def select(self, text: str = "") -> list[Image]:
        if not text:
            return sorted(self.store.all(), key=lambda image: image.created_at_ns)
        image = self.find(text)
        return [] if image is None else [image]

    def is_pinned(self, image: Image) -> bool:
        return any(name in self._pinned for name in image.names)

    async def remove(self, text: str) -> None:
        """Remove the image with all its names; unknown images are already removed."""
        image = self.find(text)
        if image is None:
            return
        # A container removed a moment ago still holds its layers until its clean-up ends.
        await self.removals_settled()
        if image.id in self.in_use():
            # Kubelet removes images under disk pressure: the names go now, the content with
            # the last container using it.
            self.store.add(image.with_names((), ()))
            log.info("image names removed; content kept for containers", image_id=image.id)
            return
        self.store.remove(image.id)
        log.info("image removed", image_id=image.id, names=list(image.names))
        await self.collect_garbage()

    def config(self, image: Image) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.content.read(image.id))
        return data

    def verbose_info(self, image: Image) -> dict[str, object]:
        """ImageStatus(verbose) details: the config and the layers it unpacks to. Blocking."""
        return {
            "imageSpec": self.config(image),
            "manifestDigest": image.manifest_digest,
            "chainIDs": image.chain_ids(),
            "lowerDirs": [str(d) for d in self.lower_dirs(image)],
        }

    def lower_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers, topmost first, as overlayfs lists lower dirs."""
        return [self.layers.path(chain) for chain in reversed(image.chain_ids())]

    async def collect_garbage(self) -> None:
        """Delete blobs and layers no image, container or running pull uses."""
        async with self._gc_lock:
            blobs = await asyncio.to_thread(self.content.digests)
            chains = await asyncio.to_thread(self.layers.chain_ids)
            removed_blobs = removed_layers = 0
            for digest in blobs - self._referenced_blobs():
                async with self.puller.blob_locks.held(digest):
                    # A pull may have leased it while we waited for the lock.
                    if digest not in self._referenced_blobs():
                        await asyncio.to_thread(self.content.delete, digest)
                        removed_blobs += 1
            for chain in chains - self._referenced_chains():
                async with self.puller.chain_locks.held(chain):
                    if chain not in self._referenced_chains():
                        await asyncio.to_thread(self.layers.delete, chain)
                        removed_layers += 1
            if removed_blobs or removed_layers:
                log.info("image garbage collected", blobs=removed_blobs, layers=removed_layers)

    def recover(self) -> list[str]:
        """At start, before any pull: drop what interrupted pulls and removals left."""
        fixed = [f"removed unfinished download {n}" for n in self.content.clear_ingest()]
        fixed += [f"removed unfinished layer {n}" for n in self.layers.clear_staging()]
        for digest in self.content.digests() - self._referenced_blobs():
            self.content.delete(digest)
            fixed.append(f"removed unreferenced blob {digest}")
        for chain in self.layers.chain_ids() - self._referenced_chains():
            self.layers.delete(chain)
            fixed.append(f"removed unreferenced layer {chain}")
        return fixed

    async def close(self) -> None:
        await self.client.aclose()
        await asyncio.to_thread(self.puller.close)

    def _referenced_blobs(self) -> set[str]:
        used = set(self.puller.leased().blobs)
        for image in self.store.all():
            used |= image.blob_digests()
        return used

    def _referenced_chains(self) -> set[str]:
        used = set(self.puller.leased().chains)
        for image in self.store.all():
            used |= set(image.chain_ids())
        return used


def _normalized(name: str) -> str:
    try:
        return str(parse_reference(name))
    except InvalidReference:
        return name


async def _nothing_pending() -> None:
    return None
