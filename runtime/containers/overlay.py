"""Overlay mounts of unpacked layers, through the new mount API (fsopen, fsconfig, fsmount).

mount(2) takes every option in one page, which with long layer paths caps an image at about
120 layers (the kernel then fails with ENOENT on the cut-off path). fsconfig passes one lower
layer per call ("lowerdir+", kernel 6.8), leaving only the kernel's own limit of 500 layers;
each value is still limited to 255 bytes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from runtime.host import linux

# The numbers are the same on every architecture: these syscalls came after the tables merged.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_MOUNT_SETATTR = 442

_FSOPEN_CLOEXEC = 0x1
_FSMOUNT_CLOEXEC = 0x1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_IDMAP = 0x100000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_OPEN_TREE_CLONE = 0x1
_AT_RECURSIVE = 0x8000
_MS_PRIVATE = 1 << 18
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MAX_VALUE = 255  # fsconfig copies at most 256 bytes, the NUL included

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_overlay(
    lowers: Sequence[Path],
    upper: Path | None,
    work: Path | None,
    target: Path,
    idmap_userns: Path | None = None,
) -> None:
    """Mount lowers (topmost first) on target, writable into upper/work when those are given.

    Without an upper layer a single lower is bind-mounted read-only, since overlayfs wants two.
    With idmap_userns (a user namespace file) the lowers' files appear owned by the ids that
    namespace maps theirs to. overlayfs itself cannot be idmapped, but its layers can (5.19):
    each lower is staged as an idmapped mount beside target, used, then detached, as the
    overlay keeps its own private copy of every layer mount.
    """
    if not lowers:
        raise ValueError("an overlay needs at least one lower layer")
    if (upper is None) != (work is None):
        raise ValueError("upper and work go together")
    if upper is None and len(lowers) == 1:
        _bind(lowers[0], target, read_only=True, recursive=False, idmap_userns=idmap_userns)
        return
    if idmap_userns is None:
        _mount_overlay(lowers, upper, work, target)
        return
    staging = target.parent / f"{target.name}.idmapped"
    staging.mkdir()
    staged: list[Path] = []
    try:
        for index, lower in enumerate(lowers):
            layer = staging / str(index)
            layer.mkdir()
            _bind(lower, layer, read_only=True, recursive=False, idmap_userns=idmap_userns)
            staged.append(layer)
        _mount_overlay(staged, upper, work, target)
    finally:
        for layer in staged:
            unmount(layer, detach=True)
        shutil.rmtree(staging, ignore_errors=True)


def _mount_overlay(
    lowers: Sequence[Path], upper: Path | None, work: Path | None, target: Path
) -> None:
    for path in [*lowers, *(p for p in (upper, work) if p is not None)]:
        if len(os.fsencode(path)) > _MAX_VALUE:
            raise OSError(errno.ENAMETOOLONG, f"overlay layer path too long for fsconfig: {path}")
    mount = _overlay(lowers, upper, work)
    try:
        _move_mount(mount, target)
    finally:
        os.close(mount)


def unmount(target: Path, *, detach: bool = False) -> None:
    """Unmount target; one that is not a mount point (or does not exist) is already done.

    detach takes mounts below target along, which a plain unmount refuses (EBUSY).
    """
    try:
        linux.umount(str(target), linux.MNT_DETACH if detach else 0)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def _overlay(lowers: Sequence[Path], upper: Path | None, work: Path | None) -> int:
    context = _syscall("fsopen overlay", _SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC)
    try:
        _set_lowers(context, lowers)
        if upper is not None and work is not None:
            _set_string(context, "upperdir", str(upper))
            _set_string(context, "workdir", str(work))
        _syscall(
            "fsconfig create overlay", _SYS_FSCONFIG, context, _FSCONFIG_CMD_CREATE, None, None, 0
        )
        read_only = _MOUNT_ATTR_RDONLY if upper is None else 0
        return _syscall("fsmount overlay", _SYS_FSMOUNT, context, _FSMOUNT_CLOEXEC, read_only)
    finally:
        os.close(context)


def _set_lowers(context: int, lowers: Sequence[Path]) -> None:
    try:
        _set_string(context, "lowerdir+", str(lowers[0]))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # Before 6.8 there is only the one colon-separated value, bounded to 255 bytes.
        _set_string(context, "lowerdir", ":".join(_escaped(p) for p in lowers))
        return
    for lower in lowers[1:]:
        _set_string(context, "lowerdir+", str(lower))


def _escaped(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


def _set_string(context: int, key: str, value: str) -> None:
    _syscall(
        f"fsconfig {key}={value}",
        _SYS_FSCONFIG,
        context,
        _FSCONFIG_SET_STRING,
        key.encode(),
        os.fsencode(value),
        0,
    )


def bind_staged(
    source: Path, target: Path, *, recursive_read_only: bool, idmap_userns: Path | None
) -> None:
    """Bind source and every mount below it on target, private, each read-only when asked,
    each idmapped through idmap_userns (a user namespace file) when given.

    A later bind of target copies each mount's read-only flag and idmapping, so a container
    given target gets the whole tree that way; a plain "ro" bind leaves submounts writable,
    and crun 1.8 and runc 1.1 know neither "rro" nor idmapped mounts.
    """
    _bind(source, target, read_only=recursive_read_only, recursive=True, idmap_userns=idmap_userns)


def _bind(
    source: Path, target: Path, *, read_only: bool, recursive: bool, idmap_userns: Path | None
) -> None:
    flags = _OPEN_TREE_CLONE | os.O_CLOEXEC | (_AT_RECURSIVE if recursive else 0)
    clone = _syscall(f"open_tree {source}", _SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), flags)
    userns = os.open(idmap_userns, os.O_RDONLY | os.O_CLOEXEC) if idmap_userns else -1
    try:
        attr = _MountAttr(
            attr_set=(_MOUNT_ATTR_RDONLY if read_only else 0)
            | (_MOUNT_ATTR_IDMAP if userns >= 0 else 0),
            propagation=_MS_PRIVATE,
            userns_fd=max(userns, 0),
        )
        _syscall(
            f"mount_setattr {source}",
            _SYS_MOUNT_SETATTR,
            clone,
            b"",
            _AT_EMPTY_PATH | (_AT_RECURSIVE if recursive else 0),
            ctypes.byref(attr),
            ctypes.sizeof(attr),
        )
        _move_mount(clone, target)
    finally:
        os.close(clone)
        if userns >= 0:
            os.close(userns)


def _move_mount(mount: int, target: Path) -> None:
    _syscall(
        f"move_mount to {target}",
        _SYS_MOVE_MOUNT,
        mount,
        b"",
        _AT_FDCWD,
        os.fsencode(target),
        _MOVE_MOUNT_F_EMPTY_PATH,
    )


def _syscall(step: str, number: int, *args: object) -> int:
    # Integers go as C longs: syscall(2) reads every argument as one.
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    result: int = _libc.syscall(ctypes.c_long(number), *converted)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{step}: {os.strerror(err)}")
    return result
