"""Which sysctls a pod may set: only those its own namespaces scope, as runc validates them."""

from __future__ import annotations

from pathlib import Path

from runtime.errors import InvalidArgument
from runtime.pods.model import NamespaceMode, NamespaceOptions

_IPC_PREFIXES = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shm")
_IPC_MQUEUE = "fs.mqueue."
_UTS_NAMES = ("kernel.domainname", "kernel.hostname")
PROC_SYS = Path("/proc/sys")


def _dotted(name: str) -> str:
    # Kubernetes accepts "net/ipv4/conf/eth0.100/rp_filter": the first separator decides.
    first = next((c for c in name if c in "./"), ".")
    if first == "/":
        return name.replace(".", "\0").replace("/", ".").replace("\0", "/")
    return name


def _proc_path(name: str) -> str:
    return name.replace("/", "\0").replace(".", "/").replace("\0", ".")


def validate_sysctls(sysctls: dict[str, str], ns: NamespaceOptions) -> dict[str, str]:
    """Map each sysctl to its /proc/sys-relative path, or refuse it naming the field."""
    paths: dict[str, str] = {}
    for name, value in sysctls.items():
        dotted = _dotted(name)
        proc_path = _proc_path(dotted)
        # Checked on the final path: a ".." in the slash form hides as "//" in the dotted one.
        if not name or "\0" in name or any(p in ("", ".", "..") for p in proc_path.split("/")):
            raise InvalidArgument(f"sysctl {name!r}: not a valid sysctl name")
        if "\n" in value:
            raise InvalidArgument(f"sysctl {name!r}: value must be a single line")
        if dotted.startswith("net."):
            if ns.network is NamespaceMode.NODE:
                raise InvalidArgument(f"sysctl {name!r}: not allowed with the host network")
        elif dotted.startswith(_IPC_PREFIXES) or dotted.startswith(_IPC_MQUEUE):
            if ns.ipc is NamespaceMode.NODE:
                raise InvalidArgument(f"sysctl {name!r}: not allowed with the host IPC namespace")
        elif dotted in _UTS_NAMES:
            if ns.network is NamespaceMode.NODE:
                raise InvalidArgument(f"sysctl {name!r}: not allowed with the host UTS namespace")
        else:
            raise InvalidArgument(
                f"sysctl {name!r}: not a namespaced sysctl (allowed: net.*, kernel.shm*, "
                "kernel.msg*, kernel.sem, fs.mqueue.*, kernel.hostname, kernel.domainname)"
            )
        paths[name] = proc_path
    return paths


def apply_sysctls(paths: dict[str, str], values: dict[str, str]) -> None:
    """Write sysctls as the calling thread sees them: call it inside the pod's namespaces."""
    for name, relative in paths.items():
        target = PROC_SYS / relative
        try:
            target.write_text(values[name])
        except FileNotFoundError:
            raise InvalidArgument(f"sysctl {name!r}: no such sysctl on this kernel") from None
        except OSError as exc:
            raise InvalidArgument(
                f"sysctl {name!r}={values[name]!r}: {exc.strerror or exc}"
            ) from None
