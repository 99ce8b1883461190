"""Layer unpacking from tars built in memory: metadata round trips, whiteouts, hostile layers."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import stat
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from runtime.images.unpack import LayerError, unpack_layer

Entry = tuple[tarfile.TarInfo, bytes]
CAP = 1 << 30
T0 = 1_600_000_000


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    owner: tuple[int, int] = (0, 0),
    mtime: int = T0,
    link: str = "",
    device: tuple[int, int] = (0, 0),
    xattrs: dict[str, str] | None = None,
) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data)
    info.mode = mode
    info.uid, info.gid = owner
    info.mtime = mtime
    info.linkname = link
    info.devmajor, info.devminor = device
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in (xattrs or {}).items()}
    return info, data


def tar_bytes(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def compressed(raw: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(raw, compresslevel=1)
    if compression == "zstd":
        # Two frames, split mid-tar, as chunked zstd layers are.
        half = len(raw) // 2
        zstd = zstandard.ZstdCompressor()
        return zstd.compress(raw[:half]) + zstd.compress(raw[half:])
    return raw


def layer(tmp_path: Path, entries: list[Entry], compression: str = "plain") -> Path:
    blob = tmp_path / f"blob-{uuid.uuid4().hex[:8]}"
    blob.write_bytes(compressed(tar_bytes(entries), compression))
    return blob


@pytest.fixture
def outer(tmp_path: Path) -> Path:
    """A sentinel parent of the destination, which must stay holding nothing else."""
    (tmp_path / "outer" / "layer").mkdir(parents=True)
    return tmp_path / "outer"


@pytest.fixture
def dest(outer: Path) -> Path:
    return outer / "layer"


def test_entries_keep_their_metadata(tmp_path: Path, dest: Path) -> None:
    conf, deep = b"key=value\n", b"deep\n"
    blob = layer(
        tmp_path,
        [
            entry("./", tarfile.DIRTYPE, mode=0o755, mtime=T0 + 1),
            entry("./etc/", tarfile.DIRTYPE, mode=0o750, owner=(1000, 1001), mtime=T0 + 2),
            entry("./etc/conf", data=conf, mode=0o4750, owner=(1000, 1001), mtime=T0 + 3),
            entry("./etc/link", tarfile.SYMTYPE, link="conf", owner=(1000, 1001), mtime=T0 + 4),
            entry("./etc/hard", tarfile.LNKTYPE, link="./etc/conf"),
            entry("./etc/sub/", tarfile.DIRTYPE, mode=0o700, mtime=T0 + 5),
            entry("./etc/sub/deep", data=deep, mode=0o600, mtime=T0 + 6),
            entry("./run/fifo", tarfile.FIFOTYPE, mode=0o620, mtime=T0 + 7),
        ],
    )

    assert unpack_layer(blob, dest, max_bytes=CAP).written == len(conf) + len(deep)

    def check(path: Path, kind: int, mode: int, mtime: int) -> os.stat_result:
        info = path.lstat()
        assert stat.S_IFMT(info.st_mode) == kind, path
        assert stat.S_IMODE(info.st_mode) == mode, path
        assert info.st_mtime_ns == mtime * 1_000_000_000, path
        return info

    check(dest, stat.S_IFDIR, 0o755, T0 + 1)
    etc = check(dest / "etc", stat.S_IFDIR, 0o750, T0 + 2)
    conf_info = check(dest / "etc/conf", stat.S_IFREG, 0o4750, T0 + 3)
    link = check(dest / "etc/link", stat.S_IFLNK, 0o777, T0 + 4)
    check(dest / "etc/sub", stat.S_IFDIR, 0o700, T0 + 5)
    check(dest / "etc/sub/deep", stat.S_IFREG, 0o600, T0 + 6)
    check(dest / "run/fifo", stat.S_IFIFO, 0o620, T0 + 7)
    assert stat.S_IMODE((dest / "run").stat().st_mode) == 0o755
    assert (dest / "etc/conf").read_bytes() == conf
    assert os.readlink(dest / "etc/link") == "conf"
    assert (dest / "etc/hard").stat().st_ino == conf_info.st_ino
    if os.geteuid() == 0:
        for info in (etc, conf_info, link):
            assert (info.st_uid, info.st_gid) == (1000, 1001)


@pytest.mark.root
def test_devices_are_made(tmp_path: Path, dest: Path) -> None:
    blob = layer(
        tmp_path,
        [
            entry("dev/null", tarfile.CHRTYPE, mode=0o666, device=(1, 3)),
            entry("dev/loop0", tarfile.BLKTYPE, mode=0o660, device=(7, 0)),
        ],
    )

    unpack_layer(blob, dest, max_bytes=CAP)

    null, loop = (dest / "dev/null").lstat(), (dest / "dev/loop0").lstat()
    assert stat.S_ISCHR(null.st_mode) and stat.S_IMODE(null.st_mode) == 0o666
    assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(loop.st_mode) and stat.S_IMODE(loop.st_mode) == 0o660
    assert (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 0)


def test_xattrs_are_set(tmp_path: Path, dest: Path) -> None:
    probe = tmp_path / "probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            pytest.skip("the temporary filesystem has no user xattrs")
        raise
    blob = layer(
        tmp_path,
        [
            entry("dir/", tarfile.DIRTYPE, xattrs={"user.dir": "d"}),
            entry("dir/file", data=b"x", xattrs={"user.moorage": "yes", "user.other": "2"}),
        ],
    )

    unpack_layer(blob, dest, max_bytes=CAP)

    assert os.getxattr(dest / "dir", "user.dir") == b"d"
    assert os.getxattr(dest / "dir/file", "user.moorage") == b"yes"
    assert os.getxattr(dest / "dir/file", "user.other") == b"2"


def is_whiteout(path: Path) -> bool:
    info = path.lstat()
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(0, 0)


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path, dest: Path) -> None:
    blob = layer(
        tmp_path,
        [
            entry("dir/gone", data=b"earlier in this layer"),
            entry("dir/sub/file", data=b"x"),
            entry("dir/.wh.gone"),
            entry("dir/.wh.sub"),
            entry("dir/.wh.below"),
        ],
    )

    unpack_layer(blob, dest, max_bytes=CAP)

    assert sorted(p.name for p in (dest / "dir").iterdir()) == ["below", "gone", "sub"]
    assert all(is_whiteout(dest / "dir" / name) for name in ("below", "gone", "sub"))


@pytest.mark.root
def test_opaque_marker_sets_the_overlay_xattr(tmp_path: Path, dest: Path) -> None:
    blob = layer(
        tmp_path,
        [
            entry("kept/", tarfile.DIRTYPE, mode=0o711),
            entry("kept/.wh..wh..opq"),
            entry("kept/file", data=b"x"),
            entry("made/.wh..wh..opq"),
        ],
    )

    unpack_layer(blob, dest, max_bytes=CAP)

    for name in ("kept", "made"):
        assert os.getxattr(dest / name, "trusted.overlay.opaque") == b"y"
    assert [p.name for p in (dest / "kept").iterdir()] == ["file"]
    assert stat.S_IMODE((dest / "kept").stat().st_mode) == 0o711


@pytest.mark.parametrize("compression", ["plain", "gzip", "zstd"])
def test_compression_is_recognised(tmp_path: Path, dest: Path, compression: str) -> None:
    data = os.urandom(300_000)
    raw = tar_bytes([entry("a/file", data=data), entry("b", data=b"small")])
    blob = tmp_path / "blob"
    blob.write_bytes(compressed(raw, compression))

    unpacked = unpack_layer(blob, dest, max_bytes=CAP)

    assert unpacked.written == len(data) + 5
    assert unpacked.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (dest / "a/file").read_bytes() == data
    assert (dest / "b").read_bytes() == b"small"


@pytest.mark.parametrize(
    ("compression", "keep"),
    [
        ("gzip", lambda n: n // 2),
        ("gzip", lambda n: n - 4),  # only the trailer's length field is lost
        ("zstd", lambda n: n // 2),
        ("zstd", lambda n: n - 3),
        ("plain", lambda n: n // 2),
    ],
)
def test_truncated_layer_is_refused(
    tmp_path: Path, dest: Path, compression: str, keep: Callable[[int], int]
) -> None:
    raw = compressed(tar_bytes([entry("file", data=os.urandom(200_000))]), compression)
    blob = tmp_path / "blob"
    blob.write_bytes(raw[: keep(len(raw))])

    with pytest.raises(LayerError):
        unpack_layer(blob, dest, max_bytes=CAP)


def test_gzip_layer_of_several_members_with_padding_is_unpacked(tmp_path: Path, dest: Path) -> None:
    """As GzipFile does, concatenated members are one stream and zero bytes after one are
    padding."""
    data = os.urandom(300_000)
    raw = tar_bytes([entry("file", data=data)])
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(raw[:1000]) + bytes(7) + gzip.compress(raw[1000:]) + bytes(9))

    unpacked = unpack_layer(blob, dest, max_bytes=CAP)

    assert unpacked.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (dest / "file").read_bytes() == data


def test_garbage_after_a_gzip_member_is_refused(tmp_path: Path, dest: Path) -> None:
    raw = tar_bytes([entry("file", data=b"x")])
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(raw) + b"garbage")

    with pytest.raises(LayerError):
        unpack_layer(blob, dest, max_bytes=CAP)


def test_garbage_after_the_zstd_magic_is_refused(tmp_path: Path, dest: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 100)

    with pytest.raises(LayerError):
        unpack_layer(blob, dest, max_bytes=CAP)


EVIL = f"moorage-evil-{uuid.uuid4().hex[:8]}"
HOSTILE: dict[str, list[Entry]] = {
    "absolute": [entry(f"/tmp/{EVIL}", data=b"x")],
    "dotdot": [entry(f"../{EVIL}", data=b"x")],
    "dotdot inside": [entry("a/", tarfile.DIRTYPE), entry(f"a/../../{EVIL}", data=b"x")],
    "through symlink to /": [
        entry("link", tarfile.SYMTYPE, link="/"),
        entry(f"link/{EVIL}", data=b"x"),
    ],
    "through symlink to ..": [
        entry("link", tarfile.SYMTYPE, link=".."),
        entry(f"link/{EVIL}", data=b"x"),
    ],
    "through nested symlink": [
        entry("a/link", tarfile.SYMTYPE, link="../../"),
        entry(f"a/link/{EVIL}/deeper", data=b"x"),
    ],
    "hardlink to /etc/passwd": [entry(EVIL, tarfile.LNKTYPE, link="/etc/passwd")],
    "hardlink to ../x": [entry(EVIL, tarfile.LNKTYPE, link="../x")],
    "whiteout through symlink": [
        entry("link", tarfile.SYMTYPE, link=".."),
        entry(f"link/.wh.{EVIL}"),
    ],
}


@pytest.mark.parametrize("entries", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_layer_is_refused_and_writes_nothing_outside(
    tmp_path: Path, outer: Path, dest: Path, entries: list[Entry]
) -> None:
    blob = layer(tmp_path, entries)

    with pytest.raises(LayerError):
        unpack_layer(blob, dest, max_bytes=CAP)

    assert [p.name for p in outer.iterdir()] == ["layer"]
    assert not Path("/", EVIL).exists()
    assert not (tmp_path / EVIL).exists()


def test_decompression_bomb_stops_at_the_cap(tmp_path: Path, dest: Path) -> None:
    blob = layer(tmp_path, [entry("zeros", data=bytes(50_000_000))], "gzip")
    assert blob.stat().st_size < 1_000_000

    with pytest.raises(LayerError, match="cap of 10000000 bytes"):
        unpack_layer(blob, dest, max_bytes=10_000_000)


def test_later_entries_replace_earlier_ones(tmp_path: Path, dest: Path) -> None:
    blob = layer(
        tmp_path,
        [
            entry("was-file", data=b"file"),
            entry("was-file/", tarfile.DIRTYPE),
            entry("was-file/child", data=b"child"),
            entry("was-dir/", tarfile.DIRTYPE, mtime=T0 + 9),
            entry("was-dir/child", data=b"child"),
            entry("was-dir", data=b"now a file"),
            entry("kept/", tarfile.DIRTYPE, mode=0o700),
            entry("kept/child", data=b"child"),
            entry("kept/", tarfile.DIRTYPE, mode=0o755, mtime=T0 + 8),
            entry("file", data=b"old"),
            entry("file", data=b"new"),
        ],
    )

    unpack_layer(blob, dest, max_bytes=CAP)

    assert (dest / "was-file/child").read_bytes() == b"child"
    assert (dest / "was-dir").read_bytes() == b"now a file"
    assert (dest / "kept/child").read_bytes() == b"child"
    kept = (dest / "kept").stat()
    assert (stat.S_IMODE(kept.st_mode), kept.st_mtime_ns) == (0o755, (T0 + 8) * 1_000_000_000)
    assert (dest / "file").read_bytes() == b"new"
