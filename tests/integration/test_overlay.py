"""Overlay mounts on the real kernel, with more layers and longer paths than mount(2) can take."""

from __future__ import annotations

import errno
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.containers import overlay
from runtime.containers.overlay import mount_overlay, unmount
from runtime.images.unpack import unpack_layer

LAYERS = 130
LONG = "l" * 64


def mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return {line.split()[4] for line in mountinfo}


@pytest.fixture
def base() -> Iterator[Path]:
    # Under /tmp rather than tmp_path: pytest's tmp dirs may sit on a filesystem overlayfs
    # refuses as an upper layer.
    root = Path(tempfile.mkdtemp(prefix="moorage-ovl-", dir="/tmp")) / LONG
    root.mkdir()
    try:
        yield root
    finally:
        for point in sorted(mount_points(), key=len, reverse=True):
            if point.startswith(f"{root.parent}/"):
                unmount(Path(point))
        shutil.rmtree(root.parent)


def make_layers(base: Path, count: int, name_length: int = 64) -> list[Path]:
    """count layers, bottom first, layer i holding file-i."""
    layers = []
    for i in range(count):
        layer = base / f"{i:03d}".ljust(name_length, "x")
        layer.mkdir()
        (layer / f"file-{i}").write_text(str(i))
        layers.append(layer)
    return layers


def unpacked(base: Path, entries: list[tarfile.TarInfo]) -> Path:
    """A layer made the way images make them, so whiteouts come in the layer's own format."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in entries:
            tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)
    blob = base / "blob"
    blob.write_bytes(buffer.getvalue())
    layer = base / "top".ljust(64, "x")
    layer.mkdir()
    unpack_layer(blob, layer, max_bytes=1 << 20)
    return layer


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def target_dir(base: Path, name: str) -> Path:
    target = base / name
    target.mkdir()
    return target


def test_many_long_layers_with_upper_whiteout_and_opaque_dir(base: Path) -> None:
    layers = make_layers(base, LAYERS)
    (layers[0] / "hidden").write_text("bottom")
    (layers[0] / "opaque").mkdir()
    (layers[0] / "opaque" / "old").write_text("bottom")
    top = unpacked(
        base,
        [
            tar_entry(".wh.hidden"),
            tar_entry("opaque/", tarfile.DIRTYPE),
            tar_entry("opaque/.wh..wh..opq"),
            tar_entry("opaque/new"),
        ],
    )
    lowers = [top, *reversed(layers)]
    assert len(":".join(map(str, lowers))) > 4 * os.sysconf("SC_PAGE_SIZE")
    upper, work = target_dir(base, "upper"), target_dir(base, "work")
    merged = target_dir(base, "merged")

    mount_overlay(lowers, upper, work, merged)
    try:
        assert str(merged) in mount_points()
        for i in range(LAYERS):
            assert (merged / f"file-{i}").read_text() == str(i)
        assert not (merged / "hidden").exists()
        assert [p.name for p in (merged / "opaque").iterdir()] == ["new"]
        (merged / "written").write_text("up")
        assert (upper / "written").read_text() == "up"
        assert not any((layer / "written").exists() for layer in lowers)
    finally:
        unmount(merged)

    assert str(merged) not in mount_points()
    assert not (merged / "file-0").exists()


def test_without_upper_the_overlay_is_read_only(base: Path) -> None:
    layers = make_layers(base, 3)
    merged = target_dir(base, "merged")

    mount_overlay(layers[::-1], None, None, merged)
    try:
        assert sorted(p.name for p in merged.iterdir()) == ["file-0", "file-1", "file-2"]
        with pytest.raises(OSError) as raised:
            (merged / "new").write_text("x")
        assert raised.value.errno == errno.EROFS
    finally:
        unmount(merged)

    assert str(merged) not in mount_points()


def test_a_single_lower_is_bound_read_only(base: Path) -> None:
    (layer,) = make_layers(base, 1)
    merged = target_dir(base, "merged")

    mount_overlay([layer], None, None, merged)
    try:
        assert (merged / "file-0").read_text() == "0"
        with pytest.raises(OSError) as raised:
            (merged / "new").write_text("x")
        assert raised.value.errno == errno.EROFS
    finally:
        unmount(merged)

    assert str(merged) not in mount_points()


def test_falls_back_to_one_lowerdir_on_kernels_without_lowerdir_plus(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = overlay._set_string

    def without_plus(context: int, key: str, value: str) -> None:
        if key == "lowerdir+":
            raise OSError(errno.EINVAL, "fsconfig lowerdir+: Invalid argument")
        real(context, key, value)

    monkeypatch.setattr(overlay, "_set_string", without_plus)
    # The single value is bounded to 255 bytes, so these layers sit higher up with short names.
    layers = make_layers(base.parent, 3, name_length=8)
    upper, work = target_dir(base, "upper"), target_dir(base, "work")
    merged = target_dir(base, "merged")

    mount_overlay(layers[::-1], upper, work, merged)
    try:
        assert sorted(p.name for p in merged.iterdir()) == ["file-0", "file-1", "file-2"]
    finally:
        unmount(merged)


def test_failures_name_the_step(base: Path) -> None:
    merged = target_dir(base, "merged")

    with pytest.raises(OSError, match=r"fsconfig lowerdir\+=.*missing") as raised:
        mount_overlay([base / "missing", base / "also-missing"], None, None, merged)

    assert raised.value.errno == errno.ENOENT
    assert str(merged) not in mount_points()


def test_unmounting_what_is_not_mounted_is_fine(base: Path) -> None:
    unmount(target_dir(base, "never-mounted"))
    unmount(base / "does-not-exist")
