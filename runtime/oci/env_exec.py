"""Environment values that are not UTF-8, delivered as their exact bytes.

config.json is JSON: crun refuses raw invalid bytes in it, and an escaped lone surrogate
reaches the process mangled (crun: its 3-byte encoding, runc: U+FFFD). A container with such
an entry therefore starts through env-exec (env_exec.c, a static binary hack/install builds),
bind-mounted read-only into its /dev: the entries go to it as hex arguments, it puts them into
the environment and execs the real process, which keeps the pid, the fds and nothing of
env-exec but that mount. Containers whose environment is all UTF-8 get a spec without any of
this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.errors import FailedPrecondition

# Under the runtime's own /dev tmpfs: the mount point never lands in the image's rootfs.
ENV_EXEC_IN_CONTAINER = "/dev/.moorage-env-exec"
_END_OF_ENTRIES = "--"


def raw_env_entry(entry: str) -> bytes | None:
    """The bytes of an entry JSON cannot carry (non-UTF-8 bytes the CRI conversion kept as
    surrogateescape), or None for one the runtime passes as it is."""
    try:
        entry.encode()
    except UnicodeEncodeError:
        pass
    else:
        return None
    try:
        return entry.encode(errors="surrogateescape")
    except UnicodeEncodeError:
        # Other lone surrogates only come from an image config's JSON and stand for no bytes.
        return None


def deliver_raw_env(spec: dict[str, Any], env_exec: Path) -> None:
    """Rewrite spec so non-UTF-8 env entries reach the process as bytes; unchanged if none."""
    process = spec["process"]
    entries: list[str] = process.get("env", [])
    raw = [(entry, raw_env_entry(entry)) for entry in entries]
    if all(data is None for _, data in raw):
        return
    if not env_exec.is_file():
        raise FailedPrecondition(
            f"the container's env has values that are not UTF-8; passing them needs the "
            f"env-exec helper at {env_exec} (runtime.env_exec_path), which is missing: "
            "hack/install builds it"
        )
    process["env"] = [entry for entry, data in raw if data is None]
    hex_entries = [data.hex() for _, data in raw if data is not None]
    process["args"] = [ENV_EXEC_IN_CONTAINER, *hex_entries, _END_OF_ENTRIES, *process["args"]]
    spec["mounts"].append(
        {
            "destination": ENV_EXEC_IN_CONTAINER,
            "type": "bind",
            "source": str(env_exec),
            "options": ["bind", "ro", "nosuid", "nodev"],
        }
    )


def with_command(args: list[str], command: list[str]) -> list[str]:
    """The args of a process that runs command in place of a container's own process, keeping
    the env-exec prefix (and so the raw env entries) when the container has one."""
    if args and args[0] == ENV_EXEC_IN_CONTAINER:
        prefix = args[: args.index(_END_OF_ENTRIES) + 1]
        return [*prefix, *command]
    return list(command)
