"""The image model: what the store keeps for each image, and what ListImages reports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Layer:
    digest: str  # of the compressed blob, as the manifest names it
    size: int  # of the compressed blob
    media_type: str
    diff_id: str  # of the uncompressed tar, from the image config
    chain_id: str  # identifies the unpacked dir: this layer on top of all below it


@dataclass(frozen=True)
class Image:
    id: str  # the config digest, as kubelet expects
    manifest_digest: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    layers: tuple[Layer, ...]  # bottom first
    size: int  # compressed layers plus config: what the registry served
    user: str  # the config's User, as written
    created_at_ns: int

    @property
    def names(self) -> tuple[str, ...]:
        return self.repo_tags + self.repo_digests

    @property
    def digest_reference(self) -> str:
        """What the kubelet shows as a container's imageID: a repo digest, else the id."""
        return self.repo_digests[0] if self.repo_digests else self.id

    def with_names(self, tags: tuple[str, ...], digests: tuple[str, ...]) -> Image:
        return replace(self, repo_tags=tags, repo_digests=digests)

    def blob_digests(self) -> set[str]:
        return {self.id, self.manifest_digest, *(layer.digest for layer in self.layers)}

    def chain_ids(self) -> list[str]:
        return [layer.chain_id for layer in self.layers]


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain ids of a layer stack: each names a layer together with all below it."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            text = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chains


def encode_image(image: Image) -> str:
    return json.dumps(asdict(image), separators=(",", ":"))


def decode_image(text: str) -> Image:
    raw: dict[str, Any] = json.loads(text)
    return Image(
        id=raw["id"],
        manifest_digest=raw["manifest_digest"],
        repo_tags=tuple(raw["repo_tags"]),
        repo_digests=tuple(raw["repo_digests"]),
        layers=tuple(Layer(**layer) for layer in raw["layers"]),
        size=raw["size"],
        user=raw["user"],
        created_at_ns=raw["created_at_ns"],
    )
