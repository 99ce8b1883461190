"""The image's own settings and the identity its process runs as.

The rootfs belongs to whoever built the image: its /etc/passwd may be a symlink aimed anywhere
(`/etc/passwd -> /etc/shadow` on the host would be read as root). Paths inside it are therefore
resolved as if the rootfs were `/`, never by the host's resolution.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.containers.model import ContainerSecurity, ImageRuntimeConfig, ProcessUser
from runtime.errors import InvalidArgument

# Linux's own limit on symlinks followed in one lookup.
MAX_SYMLINK_HOPS = 40
# passwd and group files of real images are a few KiB; a huge one is a mistake or an attack.
MAX_ACCOUNT_FILE_BYTES = 4 * 1024 * 1024
SECURITY_FIELD = "config.linux.security_context"


def parse_image_config(raw: dict[str, Any] | None) -> ImageRuntimeConfig:
    """The runtime part of an OCI image config JSON; absent or null fields are empty."""
    section = (raw or {}).get("config") or {}
    if not isinstance(section, dict):
        return ImageRuntimeConfig()
    return ImageRuntimeConfig(
        entrypoint=_strings(section.get("Entrypoint")),
        cmd=_strings(section.get("Cmd")),
        env=_strings(section.get("Env")),
        working_dir=_string(section.get("WorkingDir")),
        user=_string(section.get("User")),
        stop_signal=_string(section.get("StopSignal")),
    )


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: list[str]


def resolve_user(rootfs: Path, security: ContainerSecurity, image_user: str) -> ProcessUser:
    """The CRI's order: run_as_user, then run_as_username, then the image's User."""
    has_user = security.run_as_user is not None or bool(security.run_as_username)
    if security.run_as_group is not None and not has_user:
        raise InvalidArgument(
            f"{SECURITY_FIELD}.run_as_group needs run_as_user or run_as_username as well"
        )
    passwd = read_passwd(rootfs)
    groups = read_group(rootfs)
    if security.run_as_user is not None:
        entry = _by_uid(passwd, security.run_as_user)
        uid, gid = security.run_as_user, entry.gid if entry else 0
    elif security.run_as_username:
        entry = _by_name(passwd, security.run_as_username)
        if entry is None:
            raise InvalidArgument(
                f"{SECURITY_FIELD}.run_as_username {security.run_as_username!r} "
                "is not in the image's /etc/passwd"
            )
        uid, gid = entry.uid, entry.gid
    else:
        entry, uid, gid = _image_user(image_user, passwd, groups)
    if security.run_as_group is not None:
        gid = security.run_as_group
    username = entry.name if entry else ""
    member_of = []
    if not security.strict_supplemental_groups:
        member_of = [g.gid for g in groups if username and username in g.members]
    return ProcessUser(
        uid=uid,
        gid=gid,
        # The primary gid leads the list, as in containerd: the process holds it among its
        # groups (`id -G`), and ContainerStatus reports exactly what the process holds.
        additional_gids=_unique([gid, *security.supplemental_groups, *member_of]),
        username=username,
        home=entry.home if entry and entry.home else "/",
    )


def _image_user(
    spec: str, passwd: list[PasswdEntry], groups: list[GroupEntry]
) -> tuple[PasswdEntry | None, int, int]:
    user_part, _, group_part = spec.partition(":")
    entry: PasswdEntry | None
    if not user_part:
        entry = _by_uid(passwd, 0)
        uid, gid = 0, entry.gid if entry else 0
    elif user_part.isdigit():
        uid = int(user_part)
        entry = _by_uid(passwd, uid)
        # A numeric uid need not exist: images run as arbitrary uids on purpose.
        gid = entry.gid if entry else 0
    else:
        entry = _by_name(passwd, user_part)
        if entry is None:
            raise InvalidArgument(
                f"image config User {spec!r}: user {user_part!r} is not in the image's /etc/passwd"
            )
        uid, gid = entry.uid, entry.gid
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            group = next((g for g in groups if g.name == group_part), None)
            if group is None:
                raise InvalidArgument(
                    f"image config User {spec!r}: group {group_part!r} "
                    "is not in the image's /etc/group"
                )
            gid = group.gid
    return entry, uid, gid


def _by_uid(passwd: list[PasswdEntry], uid: int) -> PasswdEntry | None:
    return next((e for e in passwd if e.uid == uid), None)


def _by_name(passwd: list[PasswdEntry], name: str) -> PasswdEntry | None:
    return next((e for e in passwd if e.name == name), None)


def _unique(gids: list[int]) -> list[int]:
    return list(dict.fromkeys(gids))


def read_passwd(rootfs: Path) -> list[PasswdEntry]:
    entries = []
    for fields in _records(rootfs, "etc/passwd"):
        if len(fields) < 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        entries.append(PasswdEntry(fields[0], int(fields[2]), int(fields[3]), fields[5]))
    return entries


def read_group(rootfs: Path) -> list[GroupEntry]:
    entries = []
    for fields in _records(rootfs, "etc/group"):
        if len(fields) < 4 or not fields[2].isdigit():
            continue
        members = [m.strip() for m in fields[3].split(",") if m.strip()]
        entries.append(GroupEntry(fields[0], int(fields[2]), members))
    return entries


def _records(rootfs: Path, relative: str) -> list[list[str]]:
    text = read_in_root(rootfs, relative)
    records = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line and not line.startswith("#"):
            records.append(line.split(":"))
    return records


def read_in_root(rootfs: Path, relative: str) -> str:
    """A regular file inside rootfs as text; "" when it is missing or not a regular file."""
    path = join_in_root(rootfs, relative)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as file:
        # O_NONBLOCK and this check keep a FIFO or device planted in the image from hanging us.
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return ""
        data = file.read(MAX_ACCOUNT_FILE_BYTES + 1)
    if len(data) > MAX_ACCOUNT_FILE_BYTES:
        raise InvalidArgument(f"the image's /{relative} is larger than {MAX_ACCOUNT_FILE_BYTES} B")
    return data.decode("utf-8", errors="replace")


def join_in_root(rootfs: Path, unsafe: str) -> Path:
    """rootfs/unsafe with every symlink resolved as though rootfs were `/` (like securejoin)."""
    pending = deque(unsafe.split("/"))
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise InvalidArgument(f"too many symlinks resolving /{unsafe} in the image")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extendleft(reversed(target.split("/")))
    return rootfs.joinpath(*resolved)
