"""Supervising containers with conmon, as CRI-O does.

conmon runs the OCI runtime's `create`, holds the container's stdio, writes its log in the
k8s-file format and its exit code to the exit dir. It runs in a session of its own and
outlives the agent: killing the agent never stops a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from runtime.host.processes import kill_tree
from runtime.oci.runtime_cli import OciRuntime, runtime_message

log = structlog.get_logger(__name__)

# Long enough for a slow runtime on a loaded node; the runtime itself has no timeout.
_CREATE_TIMEOUT_S = 60.0
# After an exec's deadline: how long its kill and conmon's report of it may take.
_EXEC_GRACE_S = 5.0
_DEFAULT_OUTPUT_CAP = 16 * 1024 * 1024
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


class ConmonError(Exception):
    """conmon could not do what was asked; the message says why."""


class ContainerCreateError(ConmonError):
    """The runtime refused to create the container; the message is the runtime's."""


@dataclass(frozen=True)
class ConmonProcess:
    conmon_pid: int
    pid: int


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool


async def create_container(
    conmon: Path,
    runtime: OciRuntime,
    *,
    container_id: str,
    bundle: Path,
    log_path: Path | None,
    exit_dir: Path,
    socket_dir: Path,
    tty: bool,
    stdin: bool,
    stdin_once: bool,
    log_size_max: int = -1,
) -> ConmonProcess:
    """Create (not start) the container under a new conmon; on failure nothing is left."""
    bound = log.bind(container_id=container_id)
    runtime_path, runtime_args = runtime.runtime_argv_for_conmon()
    _make_dirs(exit_dir, socket_dir)
    argv: list[str | Path] = [
        conmon, "--api-version", "1", "-b", bundle, "-c", container_id, "-u", container_id,
        "-n", container_id, "-r", runtime_path,
        *[part for arg in runtime_args for part in ("--runtime-arg", arg)],
        "-P", bundle / "conmon.pid", "-p", bundle / "pidfile", "--exit-dir", exit_dir,
        "-l", f"k8s-file:{log_path or os.devnull}", "--persist-dir", bundle,
        "--socket-dir-path", socket_dir, "--log-level", "info",
    ]  # fmt: skip
    if log_size_max > 0:
        argv += ["--log-size-max", str(log_size_max)]
    if tty:
        argv.append("-t")
    if stdin:
        argv.append("-i")
        if not stdin_once:
            argv.append("--leave-stdin-open")
    try:
        message = await asyncio.wait_for(
            _run_conmon(argv, start=True, until="data"), _CREATE_TIMEOUT_S
        )
    except TimeoutError:
        message = {"data": -1, "message": f"conmon did not report within {_CREATE_TIMEOUT_S} s"}
    pid = message.get("data", -1)
    if not isinstance(pid, int) or pid <= 0:
        reason = runtime_message(str(message.get("message") or f"conmon reported {message}"))
        bound.warning("container create failed", reason=reason)
        await _leave_nothing(runtime, container_id, bundle)
        raise ContainerCreateError(reason)
    return ConmonProcess(conmon_pid=_read_pid(bundle / "conmon.pid"), pid=pid)


async def exec_sync(
    conmon: Path,
    runtime: OciRuntime,
    *,
    container_id: str,
    bundle: Path,
    process_spec: dict[str, Any],
    timeout_s: float,
    output_cap: int = _DEFAULT_OUTPUT_CAP,
) -> ExecResult:
    """Run a process in the container to completion; timeout_s == 0 means no deadline.

    At the deadline, or when the caller goes away, the exec'd process and every process it
    started are killed before this returns. The agent keeps the deadline rather than conmon's
    -T, which kills the exec'd process alone (its children live on) and only in whole seconds.
    Output comes back through conmon's k8s-file log, as in CRI-O, because that is the only
    place conmon separates stdout from stderr.
    """
    runtime_path, runtime_args = runtime.runtime_argv_for_conmon()
    # A directory of its own: conmon creates files in its bundle dir and must not touch
    # the container's (its ctl FIFO, pidfile, exit file).
    # The file work runs in threads: a probe's output may be megabytes to parse.
    scratch = await asyncio.to_thread(_exec_scratch, bundle, process_spec)
    try:
        spec_file = scratch / "process.json"
        log_file = scratch / "output.log"
        argv: list[str | Path] = [
            # No --api-version: conmon then reports {"exit_code": N} rather than two
            # {"data": ...} messages (pid, then code) that look like create's.
            conmon, "-b", scratch, "-c", container_id, "-u", container_id,
            "-n", container_id, "-r", runtime_path,
            *[part for arg in runtime_args for part in ("--runtime-arg", arg)],
            "-p", scratch / "pidfile", "-e", "--exec-process-spec", spec_file, "--sync",
            "-l", f"k8s-file:{log_file}", "--socket-dir-path", scratch,
            # Both streams and their framing share this cap; each is cut to output_cap below.
            "--log-global-size-max", str(2 * output_cap + 64 * 1024), "--log-level", "info",
        ]  # fmt: skip
        run = asyncio.ensure_future(_run_conmon(argv, start=False, until="exit_code"))
        timed_out = False
        try:
            message = await asyncio.wait_for(asyncio.shield(run), timeout_s or None)
        except TimeoutError:
            timed_out = True
            message = await _end_exec(run, scratch / "pidfile")
        except asyncio.CancelledError:
            await _end_exec(run, scratch / "pidfile")
            raise
        exit_code = message.get("exit_code", -1)
        if not isinstance(exit_code, int) or (exit_code < 0 and not timed_out):
            raise ConmonError(f"exec in {container_id}: {message.get('message') or message}")
        stdout, stderr = await asyncio.to_thread(_parse_k8s_file, log_file, output_cap)
        return ExecResult(exit_code, stdout, stderr, timed_out)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)


async def _end_exec(run: asyncio.Future[dict[str, Any]], pidfile: Path) -> dict[str, Any]:
    """Kill the exec'd process tree, then take conmon's report of its end; a conmon that
    does not report within the grace period is killed (cancelling `run` does that)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _EXEC_GRACE_S
    while not run.done() and loop.time() < deadline:
        pid = await asyncio.to_thread(_pid_in, pidfile)
        if pid is not None:
            await asyncio.to_thread(kill_tree, pid)
            break
        # The runtime has not started the process yet: its pid file comes with it.
        await asyncio.wait([run], timeout=0.01)
    try:
        return await asyncio.wait_for(run, max(deadline - loop.time(), 0.1))
    except TimeoutError:
        return {"exit_code": -1, "message": "conmon did not report the killed exec's end"}


def _exec_scratch(bundle: Path, process_spec: dict[str, Any]) -> Path:
    """A directory of the exec's own, holding its process spec."""
    scratch = Path(tempfile.mkdtemp(prefix="exec-", dir=bundle))
    (scratch / "process.json").write_text(json.dumps(process_spec))
    return scratch


def reopen_log(ctl: Path, log_path: Path | None = None, timeout_s: float = 5.0) -> None:
    """Ask conmon, through its ctl FIFO, to reopen the container's log file (after the kubelet
    rotated it), and return once log_path exists again: the kubelet stats the new file right
    after the call. Blocking: run it in a thread."""
    try:
        fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        # ENXIO: the FIFO exists but nobody reads it, i.e. conmon is gone.
        why = "conmon is not running" if exc.errno == errno.ENXIO else exc.strerror
        raise ConmonError(f"cannot reopen the log through {ctl}: {why}") from None
    try:
        os.write(fd, b"2 0 0\n")
    finally:
        os.close(fd)
    if log_path is None:
        return
    deadline = time.monotonic() + timeout_s
    delay_s = 0.0005
    while not log_path.exists():
        if time.monotonic() > deadline:
            raise ConmonError(f"conmon did not reopen {log_path} within {timeout_s} s")
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, 0.02)


# -- plumbing --------------------------------------------------------------------------------


async def _run_conmon(argv: list[str | Path], *, start: bool, until: str) -> dict[str, Any]:
    """Launch conmon with the sync pipe (and the start pipe for create), and return the first
    sync message holding `until`: "data" (create's pid) or "exit_code" (exec --sync)."""
    sync_read, sync_write = os.pipe2(os.O_CLOEXEC)
    start_read, start_write = os.pipe2(os.O_CLOEXEC)
    env = {**_ENV, "_OCI_SYNCPIPE": str(sync_write)}
    if start:
        env["_OCI_STARTPIPE"] = str(start_read)
    try:
        proc = await asyncio.create_subprocess_exec(
            *[str(a) for a in argv],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            pass_fds=[sync_write, start_read] if start else [sync_write],
            # Its own session: conmon must survive the agent and its process group.
            start_new_session=True,
        )
    finally:
        os.close(sync_write)
        os.close(start_read)
    try:
        if start:
            os.write(start_write, b"0")
    finally:
        os.close(start_write)
    reader = _SyncReader(sync_read)
    try:
        message = await reader.next_message()
        while message is not None and until not in message:
            message = await reader.next_message()
        # Create: the first conmon double-forks and exits at once; exec --sync: conmon is
        # done once it reported the code. Its daemon half has stdio on /dev/null.
        _, err = await proc.communicate()
    except BaseException:
        # Cancelled (a deadline): an exec conmon is still our child and must not outlive us.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    finally:
        reader.close()
    if message is None:
        text = err.decode(errors="replace").strip()
        return {until: -1, "message": text or "conmon exited without a word"}
    return message


class _SyncReader:
    """JSON objects from conmon's sync pipe, read without blocking the event loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = ""
        self._decoder = json.JSONDecoder()
        os.set_blocking(fd, False)

    async def next_message(self) -> dict[str, Any] | None:
        """The next object, or None at end of file."""
        while True:
            text = self._buffer.lstrip()
            if text:
                try:
                    value, end = self._decoder.raw_decode(text)
                except ValueError:
                    pass
                else:
                    self._buffer = text[end:]
                    return value if isinstance(value, dict) else {"message": repr(value)}
            chunk = await self._read()
            if not chunk:
                return None
            self._buffer += chunk.decode(errors="replace")

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self._fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self._fd)
        return os.read(self._fd, 65536)

    def close(self) -> None:
        os.close(self._fd)


async def _leave_nothing(runtime: OciRuntime, container_id: str, bundle: Path) -> None:
    """After a failed create: no conmon, no runtime state."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(_read_pid(bundle / "conmon.pid"), signal.SIGKILL)
    await runtime.delete(container_id, force=True)


def _make_dirs(*directories: Path) -> None:
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)


def _read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def _pid_in(path: Path) -> int | None:
    try:
        return _read_pid(path)
    except (OSError, ValueError):
        return None


def _parse_k8s_file(log_file: Path, cap: int) -> tuple[bytes, bytes]:
    """Lines are `TIMESTAMP STREAM TAG TEXT`; TAG F ends a line, P continues it."""
    streams = {b"stdout": bytearray(), b"stderr": bytearray()}
    try:
        data = log_file.read_bytes()
    except FileNotFoundError:
        return b"", b""
    for record in data.split(b"\n"):
        parts = record.split(b" ", 3)
        if len(parts) < 3 or parts[1] not in streams:
            continue
        out = streams[parts[1]]
        if len(out) < cap:
            out += parts[3] if len(parts) == 4 else b""
            if parts[2] == b"F":
                out += b"\n"
    return bytes(streams[b"stdout"][:cap]), bytes(streams[b"stderr"][:cap])
