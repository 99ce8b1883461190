"""Mount.mount_options: the per-mount flags a bind mount may carry beyond its own fields.

Only flags that crun and runc both set on the bind (by remounting it) are taken; tried on
both. What has a field of its own (readonly, propagation, recursive_read_only), what changes
the kind of mount (bind, remount), filesystem data (size=, mode=) and the flags that would
lift a restriction of the host's mount (exec, dev, suid, diratime: runc keeps the host's, so
they would not hold everywhere) are refused rather than silently not applied.
"""

from __future__ import annotations

from runtime.errors import InvalidArgument

ALLOWED = frozenset(
    {"noexec", "nodev", "nosuid", "nodiratime", "noatime", "relatime", "strictatime"}
)
# The atime modes replace each other: a mount asks for one.
_ATIME_MODES = ("noatime", "relatime", "strictatime")
# Where a refused option's meaning lives instead, or why it is refused, for the error.
_REFUSED_BECAUSE = {
    "ro": "use the mount's readonly field",
    "rw": "use the mount's readonly field",
    "rro": "use the mount's recursive_read_only field",
    **{
        flag: "a bind cannot lift the host mount's flag with every OCI runtime"
        for flag in ("exec", "dev", "suid", "diratime")
    },
    **{
        flag: "use the mount's propagation field"
        for kind in ("private", "slave", "shared", "unbindable")
        for flag in (kind, f"r{kind}")
    },
}


def checked_mount_options(options: list[str], field: str) -> list[str]:
    """options as the OCI spec gets them, in order, without repeats; InvalidArgument naming
    field and the option for one outside ALLOWED, or for two atime modes."""
    kept: list[str] = []
    for option in options:
        if option not in ALLOWED:
            reason = _REFUSED_BECAUSE.get(option, f"allowed: {', '.join(sorted(ALLOWED))}")
            raise InvalidArgument(f"{field}: mount option {option!r} is not supported; {reason}")
        if option not in kept:
            kept.append(option)
    modes = [option for option in kept if option in _ATIME_MODES]
    if len(modes) > 1:
        raise InvalidArgument(f"{field}: mount options {' and '.join(modes)} contradict")
    return kept
