"""Images and their names, kept in state.db and mirrored in memory for fast reads.

A name (`repo:tag` or `repo@digest`) belongs to at most one image: pulling a tag that moved
takes it from the image that had it, which then stays, untagged, until it is removed.
"""

from __future__ import annotations

import threading

from runtime.images.model import Image, decode_image, encode_image
from runtime.state.db import StateDB

_TABLE = "images"


class ImageStore:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._images: dict[str, Image] = {}
        self._by_name: dict[str, str] = {}
        for record in db.records(_TABLE):
            image = decode_image(record)
            self._images[image.id] = image
            for name in image.names:
                self._by_name[name] = image.id

    def get(self, image_id: str) -> Image | None:
        return self._images.get(image_id)

    def by_name(self, name: str) -> Image | None:
        image_id = self._by_name.get(name)
        return None if image_id is None else self._images.get(image_id)

    def all(self) -> list[Image]:
        return list(self._images.values())

    def add(self, image: Image) -> Image:
        """Record an image, or add names to the one with its id; returns the stored image."""
        with self._lock:
            current = self._images.get(image.id)
            if current is not None:
                image = current.with_names(
                    _merged(current.repo_tags, image.repo_tags),
                    _merged(current.repo_digests, image.repo_digests),
                )
            for name in image.names:
                holder = self._by_name.get(name)
                if holder is not None and holder != image.id:
                    self._drop_name(holder, name)
            self._save(image)
            return image

    def remove(self, image_id: str) -> Image | None:
        with self._lock:
            image = self._images.pop(image_id, None)
            if image is None:
                return None
            for name in image.names:
                self._by_name.pop(name, None)
            self._db.delete(_TABLE, image_id)
            return image

    def _drop_name(self, image_id: str, name: str) -> None:
        image = self._images[image_id]
        self._save(
            image.with_names(
                tuple(n for n in image.repo_tags if n != name),
                tuple(n for n in image.repo_digests if n != name),
            )
        )

    def _save(self, image: Image) -> None:
        self._db.put(_TABLE, image.id, image.id, encode_image(image))
        self._images[image.id] = image
        for name in image.names:
            self._by_name[name] = image.id


def _merged(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*old, *new)))
