"""Unpacking one OCI layer tarball into a directory in the form overlayfs takes as a lower layer.

Every entry is created relative to directory fds opened one component at a time with
O_NOFOLLOW, so neither a hostile name nor a symlink planted by the layer itself can place
anything outside the destination. Whiteouts become overlay whiteouts (0/0 character devices)
and opaque markers become the `trusted.overlay.opaque` xattr.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# tarfile re-slices its whole read buffer on every header read: large buffers slow small files.
_TAR_BUFFER = 1 << 16
# zstd can expand a 4-byte block to 128 KiB and its decompressobj has no output limit, so the
# input is fed in small pieces: at most ~32 MiB comes out of one piece before the cap is checked.
_ZSTD_FEED = 1024
# zlib returns the input it has not used yet as a new bytes object on every bounded call, so
# the piece fed in stays small enough that re-copying it costs less than more calls would.
_GZIP_FEED = 128 << 10
# A gzip stream with its header and trailer (CRC and length) checked by zlib itself.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_XATTR = "SCHILY.xattr."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NODES = {
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
_STREAM_ERRORS = (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError)


class LayerError(ValueError):
    """A layer that cannot be unpacked, and why (names the entry)."""


class _Source(Protocol):
    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class Unpacked:
    """What unpacking a layer produced: file bytes written and the uncompressed tar's digest."""

    written: int
    diff_id: str


def unpack_layer(blob: Path, dest: Path, *, max_bytes: int) -> Unpacked:
    """Unpack the layer file at blob into the empty directory dest."""
    with open(blob, "rb") as raw:
        return unpack_stream(raw, blob.name, dest, max_bytes=max_bytes)


def unpack_stream(raw: _Source, name: str, dest: Path, *, max_bytes: int) -> Unpacked:
    """Unpack a (possibly compressed) layer read from raw into the empty directory dest.

    max_bytes caps both the uncompressed tar stream and the file contents written (the latter
    can be larger: sparse members expand their holes). The diff id is only meaningful once
    the whole stream was read, which a successful return guarantees. On any error dest is
    left half-written for the caller to remove.
    """
    stream = _Capped(_decompressed(raw), max_bytes)
    root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        written = _Unpacker(root, max_bytes).run(stream)
    except _STREAM_ERRORS as exc:
        raise LayerError(f"{name}: corrupt or truncated layer: {exc}") from exc
    finally:
        os.close(root)
    return Unpacked(written, stream.digest())


def _decompressed(raw: _Source) -> _Source:
    magic = raw.read(len(_ZSTD_MAGIC))
    source = _Rejoined(magic, raw)
    if magic.startswith(_GZIP_MAGIC):
        return _GzipMembers(source)
    if magic == _ZSTD_MAGIC:
        return _ZstdFrames(source)
    return source


class _Rejoined:
    """A stream whose first bytes were already read to sniff the compression: they come
    first again, so the source never has to seek (it may be a download still arriving)."""

    def __init__(self, head: bytes, rest: _Source) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            data, self._head = self._head + self._rest.read(-1), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data


class _Capped(io.RawIOBase):
    """The uncompressed tar stream, refusing to yield more than the cap."""

    def __init__(self, source: _Source, cap: int) -> None:
        super().__init__()
        self._source = source
        self._cap = cap
        self._total = 0
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size if size >= 0 else _CHUNK)
        self._total += len(data)
        if self._total > self._cap:
            raise LayerError(f"uncompressed layer exceeds the cap of {self._cap} bytes")
        self._hash.update(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def drain(self) -> None:
        # The tar ends before the compressed stream does; reading on checks the trailer
        # (gzip CRC and length, the end of the last zstd frame).
        while self.read(_CHUNK):
            pass


class _GzipMembers:
    """gzip members decompressed one after another.

    GzipFile reads its source 8 KiB at a time and checks the CRC in Python; this feeds zlib
    larger pieces and lets it check each member, which halves the cost of a large layer. As
    GzipFile does, zero bytes between and after members are padding.
    """

    def __init__(self, source: _Source) -> None:
        self._source = source
        self._member = zlib.decompressobj(_GZIP_WBITS)
        self._in_member = False
        self._input = b""

    def read(self, size: int, /) -> bytes:
        if size == 0:
            return b""  # zlib reads a max_length of 0 as no limit at all
        while True:
            if not self._input:
                self._input = self._source.read(_GZIP_FEED)
                if not self._input:
                    if self._in_member:
                        raise EOFError("gzip stream is truncated inside a member")
                    return b""
            if not self._in_member:
                self._input = self._input.lstrip(b"\0")
                if not self._input:
                    continue
                self._member = zlib.decompressobj(_GZIP_WBITS)
                self._in_member = True
            # Bounded, so a bomb yields no more than was asked before the cap is checked.
            data = self._member.decompress(self._input, size)
            if self._member.eof:
                self._input = self._member.unused_data
                self._in_member = False
            else:
                self._input = self._member.unconsumed_tail
            if data:
                return data


class _ZstdFrames:
    """zstd frames decompressed one after another.

    zstandard's stream_reader returns a truncated frame's output as if it were complete, so
    this feeds each frame to its own decompressobj and knows whether the last one ended.
    """

    def __init__(self, source: _Source) -> None:
        self._source = source
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False
        self._out = bytearray()
        self._ended = False

    def read(self, size: int, /) -> bytes:
        while len(self._out) < size and not self._ended:
            self._feed(self._source.read(_ZSTD_FEED))
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def _feed(self, data: bytes) -> None:
        if not data:
            if self._in_frame:
                raise LayerError("zstd stream is truncated inside a frame")
            self._ended = True
        while data:
            self._out += self._frame.decompress(data)
            self._in_frame = True
            if not self._frame.eof:
                return
            data = self._frame.unused_data
            self._frame = self._decompressor.decompressobj()
            self._in_frame = False


class _Unpacker:
    def __init__(self, root: int, cap: int) -> None:
        self._root = root
        self._cap = cap
        self._written = 0
        self._dir_times: dict[str, int] = {}
        # Non-directories extracted so far: the only valid hard link targets.
        self._placed: set[str] = set()

    def run(self, stream: _Capped) -> int:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=_TAR_BUFFER) as tar:
            for member in tar:
                self._entry(tar, member)
        stream.drain()
        self._apply_dir_times()
        return self._written

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = _normalised(member.name, member.name)
        parent_path, name = posixpath.split(path)
        if name == _OPAQUE:
            self._opaque(parent_path)
            return
        if name.startswith(_WHITEOUT):
            self._whiteout(parent_path, name.removeprefix(_WHITEOUT), path)
            return
        parent = self._open_dir(parent_path)
        try:
            self._create(tar, member, parent, name, path)
        finally:
            os.close(parent)

    def _create(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str, path: str
    ) -> None:
        if member.isdir():
            self._directory(member, parent, name, path)
            return
        if path == ".":
            raise LayerError(f"{member.name}: the layer root must be a directory")
        self._clear(parent, name, path, keep_dir=False)
        if member.isreg():
            self._file(tar, member, parent, name, path)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent)
        elif member.islnk():
            self._hardlink(member, parent, name, path)
            return
        elif member.type in _NODES:
            device = os.makedev(member.devmajor, member.devminor) if member.isdev() else 0
            os.mknod(name, _NODES[member.type] | 0o600, device, dir_fd=parent)
        else:
            raise LayerError(f"{member.name}: unsupported entry type {member.type!r}")
        _settle(member, parent, name)
        os.utime(name, ns=_times(member), dir_fd=parent, follow_symlinks=False)
        self._placed.add(path)

    def _directory(self, member: tarfile.TarInfo, parent: int, name: str, path: str) -> None:
        if not self._clear(parent, name, path, keep_dir=True):
            os.mkdir(name, 0o700, dir_fd=parent)
        _settle(member, parent, name)
        # Applied once everything is written, since creating children changes a dir's mtime.
        self._dir_times[path] = _times(member)[1]

    def _file(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str, path: str
    ) -> None:
        source = tar.extractfile(member)
        if source is None:
            raise LayerError(f"{member.name}: no content for a regular file")
        with open(os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent), "wb") as out:
            while chunk := source.read(_CHUNK):
                self._written += len(chunk)
                if self._written > self._cap:
                    raise LayerError(
                        f"{member.name}: layer contents exceed the cap of {self._cap} bytes"
                    )
                out.write(chunk)

    def _hardlink(self, member: tarfile.TarInfo, parent: int, name: str, path: str) -> None:
        target = _normalised(member.linkname, member.name)
        if target not in self._placed:
            raise LayerError(
                f"{member.name}: hard link to {member.linkname!r}, "
                "which is not an earlier entry of this layer"
            )
        target_parent, target_name = posixpath.split(target)
        source_dir = self._open_dir(target_parent)
        try:
            os.link(
                target_name,
                name,
                src_dir_fd=source_dir,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        finally:
            os.close(source_dir)
        self._placed.add(path)

    def _whiteout(self, parent_path: str, hidden: str, path: str) -> None:
        if hidden in ("", ".", ".."):
            raise LayerError(f"{path}: whiteout names no entry")
        parent = self._open_dir(parent_path)
        try:
            self._clear(parent, hidden, posixpath.join(parent_path, hidden), keep_dir=False)
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        finally:
            os.close(parent)

    def _opaque(self, path: str) -> None:
        directory = self._open_dir(path)
        try:
            os.setxattr(directory, "trusted.overlay.opaque", b"y")
        finally:
            os.close(directory)

    def _clear(self, parent: int, name: str, path: str, *, keep_dir: bool) -> bool:
        """Remove whatever an earlier entry left at name; True if a directory there was kept."""
        try:
            existing = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(existing.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
        self._forget(path)
        return False

    def _forget(self, path: str) -> None:
        below = path + "/"
        self._placed = {p for p in self._placed if p != path and not p.startswith(below)}
        for gone in [p for p in self._dir_times if p == path or p.startswith(below)]:
            del self._dir_times[gone]

    def _open_dir(self, path: str) -> int:
        """An fd on the directory at path, made if missing; a symlink on the way is an error."""
        fd = os.dup(self._root)
        for part in path.split("/") if path not in ("", ".") else []:
            try:
                child = _open_child_dir(fd, part, path)
            finally:
                os.close(fd)
            fd = child
        return fd

    def _apply_dir_times(self) -> None:
        for path in sorted(self._dir_times, key=lambda p: p.count("/"), reverse=True):
            parent_path, name = posixpath.split(path)
            parent = self._open_dir(parent_path)
            try:
                ns = self._dir_times[path]
                os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)


def _normalised(name: str, entry: str) -> str:
    # Image builders write relative names; an absolute one only makes sense to an attacker
    # hoping for an extractor that honours it, so it fails the pull like a climb out does.
    if name.startswith("/"):
        raise LayerError(f"{entry}: absolute path {name!r} in a layer")
    path = posixpath.normpath(name or ".")
    if path == ".." or path.startswith("../"):
        raise LayerError(f"{entry}: path {name!r} escapes the layer")
    return path


def _open_child_dir(parent: int, name: str, path: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        os.mkdir(name, 0o755, dir_fd=parent)
        child = os.open(name, _DIR_FLAGS, dir_fd=parent)
        os.fchmod(child, 0o755)  # not whatever the umask left
        return child
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise LayerError(
                f"{path}: {name!r} on the way is a symlink or not a directory"
            ) from exc
        raise


def _settle(member: tarfile.TarInfo, parent: int, name: str) -> None:
    """Owner, mode and xattrs of the entry just created at name (times are the caller's)."""
    try:
        os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
    except PermissionError:
        # Without root (tests, rootless use) the unpacking user owns everything.
        if os.geteuid() == 0:
            raise
    if not member.issym():
        # After chown, which clears setuid and setgid bits; name cannot be a symlink here.
        os.chmod(name, member.mode & 0o7777, dir_fd=parent)
    for key, value in member.pax_headers.items():
        if key.startswith(_XATTR):
            _set_xattr(parent, name, key.removeprefix(_XATTR), value)


def _set_xattr(parent: int, name: str, key: str, value: str) -> None:
    # No setxattrat: reach the entry through its parent's fd, not following the last component.
    target = f"/proc/self/fd/{parent}/{name}"
    try:
        os.setxattr(target, key, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    except OSError as exc:
        # Filesystems without xattrs, and namespaces the kernel keeps to itself (user.* on
        # symlinks, trusted.* without root), lose those xattrs as they would with tar.
        if exc.errno not in (errno.ENOTSUP, errno.EPERM):
            raise


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    seconds = int(member.mtime)
    ns = seconds * 1_000_000_000 + round((member.mtime - seconds) * 1_000_000_000)
    return ns, ns
