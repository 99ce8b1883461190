"""Verified blobs by digest, and the unpacked layer dirs by chain id.

New content is written under a temporary name and renamed into place only once complete and
verified, so a reader never sees half a blob or half a layer, and whatever an interrupted
pull left is recognisable by its name and removed at start.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TEMP_PREFIX = ".tmp-"


def _hex(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest.removeprefix("sha256:")


class ContentStore:
    """`content/blobs/sha256/<hex>`, with downloads landing in `content/ingest/` first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.ingest = root / "ingest"
        for directory in (self.blobs, self.ingest):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def ingest_path(self) -> Path:
        """A fresh temporary name for one download."""
        return self.ingest / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"

    def commit(self, temporary: Path, digest: str) -> None:
        """Move a verified download into place (a concurrent commit of the same blob is fine)."""
        os.replace(temporary, self.path(digest))

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def write(self, digest: str, data: bytes) -> None:
        """Store small content (manifests, configs) already verified by the caller."""
        temporary = self.ingest_path()
        temporary.write_bytes(data)
        self.commit(temporary, digest)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> set[str]:
        return {
            f"sha256:{p.name}" for p in self.blobs.iterdir() if _DIGEST.match(f"sha256:{p.name}")
        }

    def clear_ingest(self) -> list[str]:
        """Remove what interrupted downloads left; the names removed."""
        removed = []
        for entry in self.ingest.iterdir():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
        return removed


class LayerStore:
    """`layers/<chain hex>/`: one unpacked dir per chain id, shared by every image using it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, chain_id: str) -> Path:
        return self.root / _hex(chain_id)

    def has(self, chain_id: str) -> bool:
        return self.path(chain_id).is_dir()

    def staging_dir(self) -> Path:
        staging = self.root / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        staging.mkdir(mode=0o755)
        return staging

    def commit(self, staging: Path, chain_id: str) -> None:
        """Rename an unpacked dir into place; if another pull got there first, keep theirs."""
        try:
            os.rename(staging, self.path(chain_id))
        except OSError:
            if not self.has(chain_id):
                raise
            remove_tree(staging)

    def delete(self, chain_id: str) -> None:
        remove_tree(self.path(chain_id))

    def chain_ids(self) -> set[str]:
        return {
            f"sha256:{p.name}" for p in self.root.iterdir() if _DIGEST.match(f"sha256:{p.name}")
        }

    def clear_staging(self) -> list[str]:
        removed = []
        for entry in self.root.iterdir():
            if entry.name.startswith(_TEMP_PREFIX):
                remove_tree(entry)
                removed.append(entry.name)
        return removed


def remove_tree(path: Path) -> None:
    """Remove a tree or a file; the agent runs as root, so no mode inside a layer stops it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
