"""PullImage: from a reference to an image whose layers are unpacked and recorded.

Every blob and layer a pull needs is leased first, then fetched under a per-digest lock, so
concurrent pulls share downloads and a garbage collection running meanwhile never deletes what
a pull is about to use. One pull runs per reference; concurrent requests for it share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from runtime.errors import (
    ImagePullFailed,
    InvalidArgument,
    MoorageError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from runtime.images.content import ContentStore, LayerStore, remove_tree
from runtime.images.growing_file import DownloadAbandoned, GrowingFile
from runtime.images.image_store import ImageStore
from runtime.images.model import Image, Layer, chain_ids
from runtime.images.reference import InvalidReference, Reference, has_domain, parse_reference
from runtime.images.registries_conf import (
    BlockedRegistry,
    Endpoint,
    RegistriesConfError,
    RegistriesConfig,
    load_registries_conf,
    pull_sources,
)
from runtime.images.registry import (
    BadContent,
    Credentials,
    ManifestUnknown,
    RegistryClient,
    RegistryError,
    ResolvedManifest,
    Unauthorized,
    Unreachable,
)
from runtime.images.unpack import LayerError, unpack_layer, unpack_stream
from runtime.in_flight import InFlight, KeyedLocks
from runtime.settings import ImageSettings

log = structlog.get_logger("moorage.images")
T = TypeVar("T")

LAYER_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)


@dataclass
class Lease:
    """What one pull is using: garbage collection keeps it while the pull runs."""

    blobs: set[str] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)


class ImagePuller:
    def __init__(
        self,
        settings: ImageSettings,
        store: ImageStore,
        content: ContentStore,
        layers: LayerStore,
        client: RegistryClient,
    ) -> None:
        self.settings = settings
        self.store = store
        self.content = content
        self.layers = layers
        self.client = client
        self.blob_locks = KeyedLocks()
        self.chain_locks = KeyedLocks()
        self.leases: list[Lease] = []
        self._pulls = InFlight()
        self._downloads = asyncio.Semaphore(settings.max_concurrent_downloads)
        # Streamed unpacks block while their download catches up, so they get threads of their
        # own: waiting in the shared pool could starve the very downloads they wait for. Those
        # downloads never wait for an unpack, so a queue here always drains. Unpacking holds
        # the GIL for much of its work; more than one thread per two cores only adds
        # contention with the downloads on the event loop (measured: 0.49 s against 0.56 s
        # for 106 MB in 6 layers on 2 cores with one thread against three).
        self._unpackers = ThreadPoolExecutor(
            max_workers=max(1, (os.cpu_count() or 2) // 2), thread_name_prefix="moorage-unpack"
        )

    def close(self) -> None:
        self._unpackers.shutdown(wait=True, cancel_futures=True)

    def leased(self) -> Lease:
        every = Lease()
        for lease in self.leases:
            every.blobs |= lease.blobs
            every.chains |= lease.chains
        return every

    async def pull(self, text: str, creds: Credentials) -> Image:
        try:
            reference = parse_reference(text)
        except InvalidReference as exc:
            raise InvalidArgument(f"image {text!r}: {exc}") from None
        return await self._pulls.join(str(reference), lambda: self._pull(text, reference, creds))

    async def _pull(self, text: str, reference: Reference, creds: Credentials) -> Image:
        bound = log.bind(image=str(reference))
        started = time.monotonic()
        lease = Lease()
        self.leases.append(lease)
        try:
            image = await self._pull_candidates(text, reference, creds, lease)
        except LayerError as exc:
            error = ImagePullFailed(f"pulling image {reference}: {exc}")
            bound.warning("image pull failed", error=str(error))
            raise error from None
        except MoorageError as exc:
            bound.warning("image pull failed", error=str(exc))
            raise
        finally:
            self.leases.remove(lease)
        bound.info(
            "image pulled",
            image_id=image.id,
            layers=len(image.layers),
            size=image.size,
            duration_s=round(time.monotonic() - started, 3),
        )
        return image

    async def _pull_candidates(
        self, text: str, reference: Reference, creds: Credentials, lease: Lease
    ) -> Image:
        """A short name is tried at each `unqualified-search-registries` entry in turn."""
        try:
            config = await asyncio.to_thread(load_registries_conf, self.settings.registries_conf)
        except RegistriesConfError as exc:
            raise ImagePullFailed(f"{self.settings.registries_conf}: {exc}") from None
        candidates = [reference]
        if not has_domain(text) and config.unqualified_search:
            candidates = [parse_reference(text, domain) for domain in config.unqualified_search]
        for candidate in candidates[:-1]:
            try:
                return await self._pull_from_sources(candidate, config, creds, lease)
            except (NotFound, Unavailable, Unauthenticated) as exc:
                log.info("image not at this search registry", image=str(candidate), error=str(exc))
        return await self._pull_from_sources(candidates[-1], config, creds, lease)

    async def _pull_from_sources(
        self, reference: Reference, config: RegistriesConfig, creds: Credentials, lease: Lease
    ) -> Image:
        try:
            sources = pull_sources(config, reference.repository)
        except BlockedRegistry as exc:
            raise PermissionDenied(f"pulling image {reference}: {exc}") from None
        failures: list[str] = []
        last: RegistryError | None = None
        for endpoint, path in sources:
            try:
                manifest = await self.client.resolve(
                    endpoint, path, reference.digest or reference.tag, creds
                )
                return await self._fetch(
                    reference,
                    endpoint=endpoint,
                    path=path,
                    resolved=manifest,
                    creds=creds,
                    lease=lease,
                )
            except RegistryError as exc:
                failures.append(f"{endpoint.location}: {exc}")
                last = exc
                if len(sources) > 1:
                    log.info("image source failed", image=str(reference), error=str(exc))
        assert last is not None
        raise _pull_error(reference, last, failures)

    async def _fetch(
        self,
        reference: Reference,
        *,
        endpoint: Endpoint,
        path: str,
        resolved: ResolvedManifest,
        creds: Credentials,
        lease: Lease,
    ) -> Image:
        manifest = resolved.manifest
        config_ref = _descriptor(manifest.get("config"), "config")
        layer_refs = [_descriptor(d, "layer") for d in manifest.get("layers") or []]
        for ref in layer_refs:
            if ref["mediaType"] not in LAYER_MEDIA_TYPES:
                raise BadContent(f"layer {ref['digest']} has unsupported type {ref['mediaType']}")
        config_digest = config_ref["digest"]
        lease.blobs |= {config_digest, resolved.digest, *(r["digest"] for r in layer_refs)}
        await self._ensure_blob(endpoint, path, config_digest, config_ref["size"], creds)
        config = _image_config(await asyncio.to_thread(self.content.read, config_digest))
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(layer_refs):
            raise BadContent(
                f"the manifest lists {len(layer_refs)} layers, the config {len(diff_ids)}"
            )
        chains = chain_ids(diff_ids)
        lease.chains |= set(chains)
        layers = [
            Layer(r["digest"], r["size"], r["mediaType"], diff_id, chain)
            for r, diff_id, chain in zip(layer_refs, diff_ids, chains, strict=True)
        ]
        try:
            async with asyncio.TaskGroup() as group:
                for layer in layers:
                    group.create_task(self._ensure_layer(endpoint, path, layer, creds))
        except* Exception as failed:
            raise failed.exceptions[0] from None
        if not self.content.has(resolved.digest):
            await asyncio.to_thread(self.content.write, resolved.digest, resolved.raw)
        top_digest = reference.digest or resolved.digest
        image = Image(
            id=config_digest,
            manifest_digest=resolved.digest,
            repo_tags=(reference.name_with_tag,) if reference.tag else (),
            repo_digests=(f"{reference.repository}@{top_digest}",),
            layers=tuple(layers),
            size=config_ref["size"] + sum(layer.size for layer in layers),
            user=str((config.get("config") or {}).get("User") or ""),
            created_at_ns=time.time_ns(),
        )
        return self.store.add(image)

    async def _ensure_blob(  # noqa: PLR0917
        self,
        endpoint: Endpoint,
        path: str,
        digest: str,
        size: int,
        creds: Credentials,
        reader: GrowingFile | None = None,
    ) -> bool:
        """Download the blob unless the store has it; True if this call downloaded it."""
        async with self.blob_locks.held(digest):
            if self.content.has(digest):
                return False
            async with self._downloads:
                temporary = self.content.ingest_path()
                started = time.monotonic()
                progress = None
                if reader:
                    await asyncio.to_thread(reader.follow, temporary)
                    progress = reader.progress
                try:
                    await self.client.fetch_blob(
                        endpoint, path, digest, size, temporary, creds, progress
                    )
                    await asyncio.to_thread(self.content.commit, temporary, digest)
                finally:
                    temporary.unlink(missing_ok=True)
                log.debug(
                    "blob fetched",
                    digest=digest,
                    size=size,
                    duration_s=round(time.monotonic() - started, 3),
                )
                return True

    async def _ensure_layer(
        self, endpoint: Endpoint, path: str, layer: Layer, creds: Credentials
    ) -> None:
        # The check is made under the lock that garbage collection also takes, so a layer
        # found here cannot be deleted before the image that needs it is recorded.
        async with self.chain_locks.held(layer.chain_id):
            if self.layers.has(layer.chain_id):
                return
            if self.content.has(layer.digest) or not await self._unpack_while_fetching(
                endpoint, path, layer, creds
            ):
                await _outcome(self._in_unpacker(layer, None))

    async def _unpack_while_fetching(
        self, endpoint: Endpoint, path: str, layer: Layer, creds: Credentials
    ) -> bool:
        """Unpack the layer as it downloads, so neither waits for the other; False when the
        streamed unpack was void (a retried download, or another pull had the blob) and the
        layer must be unpacked from the stored blob. A download error wins over an unpack
        error: a flipped byte is reported as the digest mismatch it is."""
        reader = GrowingFile()
        unpacking = asyncio.ensure_future(self._in_unpacker(layer, reader))
        try:
            try:
                fetched = await self._ensure_blob(
                    endpoint, path, layer.digest, layer.size, creds, reader
                )
            except BaseException:
                reader.abandon()
                with contextlib.suppress(Exception):
                    await _outcome(unpacking)
                raise
            if fetched:
                reader.finish()
            else:
                reader.abandon()
            return await _outcome(unpacking)
        finally:
            reader.close()

    def _in_unpacker(self, layer: Layer, reader: GrowingFile | None) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._unpackers, self._unpack, layer, reader)

    def _unpack(self, layer: Layer, reader: GrowingFile | None) -> bool:
        """Unpack into a staging dir, check the diff id and commit; False if the download the
        reader followed was abandoned."""
        staging = self.layers.staging_dir()
        started = time.monotonic()
        cap = self.settings.max_layer_bytes
        try:
            if reader is None:
                unpacked = unpack_layer(self.content.path(layer.digest), staging, max_bytes=cap)
            else:
                unpacked = unpack_stream(reader, layer.digest, staging, max_bytes=cap)
            if unpacked.diff_id != layer.diff_id:
                raise LayerError(
                    f"its content has digest {unpacked.diff_id}, "
                    f"the image config says {layer.diff_id}"
                )
            self.layers.commit(staging, layer.chain_id)
        except DownloadAbandoned:
            remove_tree(staging)
            return False
        except LayerError as exc:
            remove_tree(staging)
            raise LayerError(f"layer {layer.digest}: {exc}") from None
        except BaseException:
            remove_tree(staging)
            raise
        log.debug(
            "layer unpacked",
            digest=layer.digest,
            bytes=unpacked.written,
            streamed=reader is not None,
            duration_s=round(time.monotonic() - started, 3),
        )
        return True


async def _outcome(work: Awaitable[T]) -> T:
    """Await work running in a thread; a cancelled caller still waits for the thread to end,
    so the locks it holds cover all the thread does."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _descriptor(raw: Any, what: str) -> dict[str, Any]:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("digest"), str)
        or not isinstance(raw.get("size"), int)
    ):
        raise BadContent(f"the manifest's {what} descriptor is malformed")
    return {"mediaType": str(raw.get("mediaType") or ""), **raw}


def _image_config(data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise BadContent("the image config is not valid JSON with rootfs.diff_ids") from None
    if not isinstance(config, dict) or not all(isinstance(d, str) for d in diff_ids):
        raise BadContent("the image config's rootfs.diff_ids are malformed")
    return config


def _pull_error(reference: Reference, error: RegistryError, failures: list[str]) -> MoorageError:
    detail = str(error) if len(failures) == 1 else "; ".join(failures)
    message = f"pulling image {reference}: {detail}"
    if isinstance(error, ManifestUnknown):
        return NotFound(message)
    if isinstance(error, Unauthorized):
        return Unauthenticated(message)
    if isinstance(error, Unreachable):
        return Unavailable(message)
    return ImagePullFailed(message)
