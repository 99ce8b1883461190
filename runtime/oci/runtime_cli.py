"""The OCI runtime CLI (runc, crun) for one handler.

Every call passes `--root <state_root>` so our containers never mix with those of other tools
on the host. `create` is run by conmon, not here: `runtime_argv_for_conmon` says how.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


_LOGRUS_MSG = re.compile(r'\bmsg="((?:[^"\\]|\\.)*)"')


class OciRuntimeError(Exception):
    """The runtime exited non-zero; `stderr` carries what it said."""

    def __init__(self, subcommand: str, exit_code: int, stderr: str) -> None:
        self.subcommand = subcommand
        self.exit_code = exit_code
        self.stderr = stderr.strip()
        super().__init__(f"{subcommand} failed (exit {exit_code}): {self.stderr}")

    def is_unknown_container(self, container_id: str) -> bool:
        """runc says "container does not exist"; crun fails to open the state dir it keeps
        under the container's id."""
        text = self.stderr.lower()
        missing_state = "no such file or directory" in text and container_id.lower() in text
        return "does not exist" in text or missing_state


class OciRuntime:
    def __init__(
        self,
        name: str,
        binary: Path,
        state_root: Path,
        wrapper_dir: Path,
        hide_mount: Path | None = None,
    ) -> None:
        """hide_mount: unmounted in a private mount namespace around `create` (crun 1.8 on a
        hybrid cgroup host, see FIELD-NOTES). wrapper_dir: where the script doing that for
        conmon is written."""
        self.name = name
        self.binary = binary
        self.state_root = state_root
        self.hide_mount = hide_mount
        self.wrapper_dir = wrapper_dir

    # -- commands ------------------------------------------------------------------------

    async def start(self, container_id: str) -> None:
        await self._run("start", container_id, container_id=container_id)

    async def kill(self, container_id: str, signal: int, all_processes: bool = False) -> None:
        args = ["--all"] if all_processes else []
        await self._run("kill", *args, container_id, str(signal), container_id=container_id)

    async def delete(self, container_id: str, force: bool = False) -> None:
        """Idempotent: a container the runtime does not know is already deleted."""
        args = ["--force"] if force else []
        try:
            await self._run("delete", *args, container_id, container_id=container_id)
        except OciRuntimeError as exc:
            if not exc.is_unknown_container(container_id):
                raise

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """The runtime's state JSON, or None when it does not know the container."""
        try:
            out = await self._run("state", container_id, container_id=container_id)
        except OciRuntimeError as exc:
            if exc.is_unknown_container(container_id):
                return None
            raise
        document: dict[str, Any] = json.loads(out)
        return document

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Apply OCI linux.resources; a refusal (memory below usage: EBUSY) raises with the
        runtime's words and leaves the old limits in place."""
        payload = json.dumps(resources).encode()
        await self._run(
            "update", "--resources", "-", container_id, stdin=payload, container_id=container_id
        )

    def exec_argv(
        self,
        container_id: str,
        *,
        process: Path,
        pid_file: Path,
        log_file: Path,
        console_socket: str | None = None,
    ) -> list[str]:
        """A foreground `exec` of the process spec in `process`: the runtime waits for the
        process and exits with its code (128 + signal when killed). Its own messages go to
        log_file as JSON lines, apart from the process's output. console_socket: where the
        runtime sends the terminal's master; crun takes one in the foreground, runc only
        with --detach (which would lose the exit code)."""
        argv = [
            str(self.binary), "--root", str(self.state_root),
            "--log", str(log_file), "--log-format", "json",
            "exec", "--process", str(process), "--pid-file", str(pid_file),
        ]  # fmt: skip
        if console_socket is not None:
            argv += ["--console-socket", console_socket]
        argv.append(container_id)
        return argv

    # -- conmon --------------------------------------------------------------------------

    def runtime_argv_for_conmon(self) -> tuple[Path, list[str]]:
        """(`-r` value, `--runtime-arg` values) for conmon, which runs `create` itself."""
        # One token: the wrapper finds the subcommand as the first argument without a dash.
        runtime_args = [f"--root={self.state_root}"]
        if self.hide_mount is None:
            return self.binary, runtime_args
        return self._write_wrapper(), runtime_args

    def _write_wrapper(self) -> Path:
        wrapper = self.wrapper_dir / f"{self.name}-private-mount"
        script = _wrapper_script(self.binary, self.hide_mount or Path("/"))
        try:
            if wrapper.read_text() == script:
                return wrapper
        except OSError:
            pass
        self.wrapper_dir.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a conmon starting now never execs a half-written script.
        partial = wrapper.with_name(wrapper.name + ".tmp")
        partial.write_text(script)
        partial.chmod(0o755)
        partial.replace(wrapper)
        return wrapper

    # -- plumbing ------------------------------------------------------------------------

    async def _run(
        self, subcommand: str, *args: str, container_id: str, stdin: bytes | None = None
    ) -> str:
        argv = [str(self.binary), "--root", str(self.state_root), subcommand, *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin)
        if proc.returncode != 0:
            error = OciRuntimeError(
                f"{self.name} {subcommand}",
                proc.returncode or -1,
                runtime_message(err.decode(errors="replace")),
            )
            log.debug(
                "oci runtime failed",
                container_id=container_id,
                command=subcommand,
                exit_code=proc.returncode,
                stderr=error.stderr,
            )
            raise error
        return out.decode(errors="replace")


def runtime_message(stderr: str) -> str:
    """The words of a runtime error: crun and runc may log JSON lines ({"msg": ...}), runc
    logrus text (time=... level=error msg="..."), or plain text."""
    lines = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(_logrus_message(line))
            continue
        lines.append(str(record.get("msg", line)) if isinstance(record, dict) else line)
    return "\n".join(line for line in lines if line.strip())


def _logrus_message(line: str) -> str:
    quoted = _LOGRUS_MSG.search(line)
    if quoted is None:
        return line
    try:
        # Go quotes like JSON but for rare escapes (\x..): then keep the text as written.
        return str(json.loads(f'"{quoted.group(1)}"'))
    except ValueError:
        return quoted.group(1)


def _wrapper_script(binary: Path, hide_mount: Path) -> str:
    unshare = shlex.quote(shutil.which("unshare") or "/usr/bin/unshare")
    mount = shlex.quote(shutil.which("mount") or "/usr/bin/mount")
    umount = shlex.quote(shutil.which("umount") or "/usr/bin/umount")
    hidden, real = shlex.quote(str(hide_mount)), shlex.quote(str(binary))
    return f"""#!/bin/sh
# Written by moorage: conmon calls this as its runtime. `create` runs in a mount namespace of
# its own without {hide_mount} (crun refuses hybrid cgroup hosts); the rest runs as is. The
# other mounts keep their propagation, so a container's shared or slave bind mounts still
# reach the host's; only the hidden one is made private first, so its unmount stays here.
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        create) exec {unshare} --mount --propagation unchanged -- \\
            /bin/sh -c '"$0" --make-private "$2" && "$1" "$2" && shift 2 && exec "$@"' \\
            {mount} {umount} {hidden} {real} "$@" ;;
        *) break ;;
    esac
done
exec {real} "$@"
"""
