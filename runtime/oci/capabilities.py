"""Linux capability sets of a container process, as containerd and CRI-O compute them."""

from __future__ import annotations

from pathlib import Path

from runtime.containers.model import ContainerSecurity
from runtime.errors import FailedPrecondition, InvalidArgument

# Index = the kernel's capability number (include/uapi/linux/capability.h).
CAPABILITY_NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# containerd's and CRI-O's default set; the order is containerd's.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

CAP_LAST_CAP = Path("/proc/sys/kernel/cap_last_cap")


def kernel_capabilities(cap_last_cap: Path = CAP_LAST_CAP) -> list[str]:
    """Every capability this kernel knows, by name; newer kernels than our table keep the
    numbers we can name, as runc would ignore the rest anyway."""
    try:
        last = int(cap_last_cap.read_text().strip())
    except (OSError, ValueError):
        last = len(CAPABILITY_NAMES) - 1
    return list(CAPABILITY_NAMES[: last + 1])


def agent_has(capability: str, status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process holds `capability` in its effective set."""
    return bool(_mask("CapEff", status) >> CAPABILITY_NAMES.index(capability) & 1)


def grantable_capabilities(
    cap_last_cap: Path = CAP_LAST_CAP, status: Path = Path("/proc/self/status")
) -> list[str]:
    """What a container can be given: the kernel's capabilities within the agent's own
    bounding set (the runtime's capset refuses the rest, as this VM's missing
    CAP_SYS_RESOURCE shows). containerd grants the same."""
    bounding = _mask("CapBnd", status)
    return [
        c for c in kernel_capabilities(cap_last_cap) if bounding >> CAPABILITY_NAMES.index(c) & 1
    ]


def _mask(line: str, status: Path) -> int:
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return 0
    return int(next((ln.split()[1] for ln in lines if ln.startswith(f"{line}:")), "0"), 16)


def normalize(name: str, field: str) -> str:
    """The full CAP_ name of `name`, given with or without the prefix in any case; "ALL" stays."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in CAPABILITY_NAMES:
        raise InvalidArgument(f"{field}: unknown capability {name!r}")
    return full


def container_capabilities(
    security: ContainerSecurity,
    cap_last_cap: Path = CAP_LAST_CAP,
    status: Path = Path("/proc/self/status"),
) -> list[str]:
    """The effective (= bounding = permitted) set of a container's process."""
    everything = grantable_capabilities(cap_last_cap, status)
    if security.privileged:
        return everything
    field = "config.linux.security_context.capabilities"
    added = [normalize(c, f"{field}.add_capabilities") for c in security.capabilities_add]
    dropped = [normalize(c, f"{field}.drop_capabilities") for c in security.capabilities_drop]
    # containerd's order: ALL first so that ["ALL"] + drop ["CHOWN"] means all but CHOWN.
    caps = list(DEFAULT_CAPABILITIES)
    if "ALL" in added:
        caps = list(everything)
    if "ALL" in dropped:
        caps = []
    for cap in added:
        if cap == "ALL" or cap in caps:
            continue
        if cap not in everything:
            raise FailedPrecondition(
                f"{field}.add_capabilities: {cap} cannot be granted on this node "
                "(the agent does not hold it itself)"
            )
        caps.append(cap)
    return [c for c in caps if c not in dropped]
