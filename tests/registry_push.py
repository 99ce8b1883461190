"""Push hand-made images straight through the distribution API, for content skopeo would not
build: layers with path traversal, decompression bombs, configs that lie."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        build(archive)
    return buffer.getvalue()


def add_file(archive: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def add_link(archive: tarfile.TarFile, name: str, target: str, *, hard: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    archive.addfile(info)


def push_image(  # noqa: PLR0917
    address: str,
    repository: str,
    tag: str,
    tars: list[bytes],
    diff_ids: list[str] | None = None,
    run_config: dict[str, Any] | None = None,
) -> str:
    """Push gzip layers made of `tars` and a minimal config (whose diff_ids may be given, to
    make it lie; run_config replaces its `config` object); returns the manifest digest."""
    base = f"http://{address}/v2/{repository}"
    layers = [gzip.compress(t, compresslevel=1) for t in tars]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]} if run_config is None else run_config,
            "rootfs": {
                "type": "layers",
                "diff_ids": [sha256(t) for t in tars] if diff_ids is None else diff_ids,
            },
        }
    ).encode()
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}
            for layer in layers
        ],
    }
    with httpx.Client(timeout=30.0) as client:
        for blob in (config, *layers):
            started = client.post(f"{base}/blobs/uploads/")
            started.raise_for_status()
            location = started.headers["Location"]
            upload = location if location.startswith("http") else f"http://{address}{location}"
            separator = "&" if "?" in upload else "?"
            client.put(
                f"{upload}{separator}digest={sha256(blob)}",
                content=blob,
                headers={"Content-Type": "application/octet-stream"},
            ).raise_for_status()
        body = json.dumps(manifest).encode()
        client.put(
            f"{base}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST}
        ).raise_for_status()
    return sha256(body)
