"""OCI image layouts built from the host's static busybox, for the image-pull tests.

Everything is deterministic (fixed mtimes, owner 0:0, gzip without timestamp) except the
random payload of `large`, so a layout's digests only change when this file does.

What each image holds, so pull tests know what to look for:

- single: busybox in /bin with applet symlinks, /etc/passwd and /etc/group (root, app 1000:1000,
  app also in group extra 50000)
- user: single, run as User "1000:1000"
- multi: base; then /data/{a,b}.txt, /data/dir/c.txt, hardlink /data/hard.txt -> b.txt,
  symlink /data/link.txt -> b.txt; then whiteout of a.txt and an opaque /data/dir holding only
  d.txt. The unpacked result is MULTI_FINAL.
- plain / zstd: single with its layer uncompressed / zstd-compressed (zstd only when the
  zstandard module is importable)
- multiarch: an index of linux/amd64 (single plus /arch) and linux/arm64 (only /arch); /arch
  holds the architecture's name
- large: base plus several layers of random bytes
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REF_NAME = "org.opencontainers.image.ref.name"
APPLETS = (
    "sh", "ls", "cat", "echo", "id", "env", "sleep", "true", "false", "mkdir", "rm", "touch",
    "cp", "mv", "ln", "stat", "head", "wc", "grep", "sed", "ps", "kill", "readlink", "hostname",
)  # fmt: skip

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
# app is also a member of extra (50000): the groups the image gives its user.
GROUP = b"root:x:0:\napp:x:1000:\nextra:x:50000:app\n"
# Path -> content of every regular file under /data once all of multi's layers are applied.
MULTI_FINAL = {
    "data/b.txt": b"bee\n",
    "data/hard.txt": b"bee\n",
    "data/dir/d.txt": b"dee\n",
}
MULTI_SYMLINKS = {"data/link.txt": "b.txt"}
MULTI_GONE = ("data/a.txt", "data/dir/c.txt")

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_GZIP = MEDIA_TAR + "+gzip"
MEDIA_ZSTD = MEDIA_TAR + "+zstd"

Descriptor = dict[str, Any]


@dataclass(frozen=True)
class Entry:
    """One tar member: a file (data), directory, symlink or hardlink (target)."""

    path: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def _dir(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, tarfile.DIRTYPE, mode=mode)


def _file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, data=data, mode=mode)


def _symlink(path: str, target: str) -> Entry:
    return Entry(path, tarfile.SYMTYPE, target=target, mode=0o777)


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """An uncompressed layer tar of entries, in order, owned by root."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.type = entry.kind
            info.mode = entry.mode
            info.mtime = MTIME
            info.uname = info.gname = "root"
            info.linkname = entry.target
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == tarfile.REGTYPE else None)
    return out.getvalue()


def base_entries() -> list[Entry]:
    applets = [_symlink(f"bin/{name}", "busybox") for name in APPLETS]
    return [
        _dir("bin"),
        _file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755),
        *applets,
        _dir("etc"),
        _file("etc/passwd", PASSWD),
        _file("etc/group", GROUP),
        _dir("root", mode=0o700),
        _dir("home"),
        _dir("home/app"),
        _dir("tmp", mode=0o1777),
    ]


def data_entries() -> list[Entry]:
    return [
        _dir("data"),
        _file("data/a.txt", b"ay\n"),
        _file("data/b.txt", b"bee\n"),
        Entry("data/hard.txt", tarfile.LNKTYPE, target="data/b.txt"),
        _symlink("data/link.txt", "b.txt"),
        _dir("data/dir"),
        _file("data/dir/c.txt", b"see\n"),
    ]


def whiteout_entries() -> list[Entry]:
    return [
        _dir("data"),
        _file("data/.wh.a.txt", b""),
        _dir("data/dir"),
        _file("data/dir/.wh..wh..opq", b""),
        _file("data/dir/d.txt", b"dee\n"),
    ]


def arch_entries(arch: str) -> list[Entry]:
    return [_file("arch", f"{arch}\n".encode())]


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _gzip_fast(data: bytes) -> bytes:
    # Random payloads do not compress; spending time trying only slows the fixture down.
    return gzip.compress(data, compresslevel=1, mtime=0)


def _zstd(data: bytes) -> bytes:
    import zstandard  # noqa: PLC0415  (optional: only the zstd image needs it)

    return zstandard.ZstdCompressor(level=3).compress(data)


def _uncompressed(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class Layer:
    tar: bytes
    media_type: str = MEDIA_GZIP
    compress: Callable[[bytes], bytes] = _gzip
    created_by: str = ""


class Layout:
    """An OCI image layout directory being written: blobs in, index.json last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    def json_blob(self, document: dict[str, Any], media_type: str) -> Descriptor:
        return self.blob(json.dumps(document, sort_keys=True).encode(), media_type)

    def image(
        self, layers: list[Layer], arch: str = "amd64", config: dict[str, Any] | None = None
    ) -> Descriptor:
        """Write layers, config and manifest; return the manifest's descriptor."""
        descriptors = [self.blob(layer.compress(layer.tar), layer.media_type) for layer in layers]
        image_config = {
            "created": CREATED,
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], "WorkingDir": "/", **(config or {})},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer.tar).hexdigest()}" for layer in layers],
            },
            "history": [{"created": CREATED, "created_by": layer.created_by} for layer in layers],
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": self.json_blob(image_config, MEDIA_CONFIG),
            "layers": descriptors,
        }
        return self.json_blob(manifest, MEDIA_MANIFEST)

    def tag(self, descriptor: Descriptor, name: str = "latest") -> None:
        tagged = {**descriptor, "annotations": {REF_NAME: name}}
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [tagged]}
        (self.root / "index.json").write_text(json.dumps(index, sort_keys=True))


def _base_layer(compress: Callable[[bytes], bytes] = _gzip, media_type: str = MEDIA_GZIP) -> Layer:
    return Layer(layer_tar(base_entries()), media_type, compress, "busybox, passwd, group")


def _single_image(root: Path, base: Layer, config: dict[str, Any] | None = None) -> Path:
    layout = Layout(root)
    layout.tag(layout.image([base], config=config))
    return root


def _multi(root: Path) -> Path:
    layout = Layout(root)
    layers = [
        _base_layer(),
        Layer(layer_tar(data_entries()), created_by="data files, a hardlink and a symlink"),
        Layer(layer_tar(whiteout_entries()), created_by="whiteout a.txt, opaque data/dir"),
    ]
    layout.tag(layout.image(layers))
    return root


def _multiarch(root: Path) -> Path:
    layout = Layout(root)
    amd64 = layout.image([_base_layer(), Layer(layer_tar(arch_entries("amd64")))], arch="amd64")
    arm64 = layout.image([Layer(layer_tar(arch_entries("arm64")))], arch="arm64")
    platforms = [
        {**amd64, "platform": {"os": "linux", "architecture": "amd64"}},
        {**arm64, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    ]
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": platforms}
    layout.tag(layout.json_blob(index, MEDIA_INDEX))
    return root


def _random_entries(index: int, size: int) -> list[Entry]:
    return [_dir("random"), _file(f"random/{index}.bin", os.urandom(size))]


def _large(root: Path, total_bytes: int, layer_count: int) -> Path:
    layout = Layout(root)
    per_layer = total_bytes // layer_count
    payload = [
        Layer(layer_tar(_random_entries(i, per_layer)), compress=_gzip_fast, created_by="random")
        for i in range(layer_count)
    ]
    layout.tag(layout.image([_base_layer(), *payload]))
    return root


def zstd_available() -> bool:
    return importlib.util.find_spec("zstandard") is not None


def build_all(
    out_dir: Path, large_bytes: int = 100 * 1024 * 1024, large_layers: int = 5
) -> dict[str, Path]:
    """Write every test image as an OCI layout under out_dir/<name>, tagged "latest"."""
    gzip_base = _base_layer()
    images = {
        "single": _single_image(out_dir / "single", gzip_base),
        "user": _single_image(out_dir / "user", gzip_base, {"User": "1000:1000"}),
        "plain": _single_image(out_dir / "plain", _base_layer(_uncompressed, MEDIA_TAR)),
        "multi": _multi(out_dir / "multi"),
        "multiarch": _multiarch(out_dir / "multiarch"),
        "large": _large(out_dir / "large", large_bytes, large_layers),
    }
    if zstd_available():
        images["zstd"] = _single_image(out_dir / "zstd", _base_layer(_zstd, MEDIA_ZSTD))
    return images
