"""Interactive exec: a process run in a running container with its stdio connected to a
streaming client (kubectl exec, crictl exec).

The OCI runtime's `exec` runs in the foreground and exits with the process's code; no conmon
is involved. Without a terminal the process gets pipes, stdout and stderr apart. With one, the
pty master reaches us one of two ways: crun sends it to a console socket while it waits for
the process; runc takes a console socket only when it detaches (then nobody could collect the
exit code), so runc gets a pty of ours as its stdio and copies through its own, as CRI-O runs
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import termios
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from runtime.errors import ContainerRuntimeFailed
from runtime.oci.runtime_cli import OciRuntime, runtime_message
from runtime.streaming.streams import StdioClient, TerminalSize

log = structlog.get_logger(__name__)

_CHUNK = 256 * 1024
# Clients send their terminal's size as soon as the session opens. Waiting that long for it
# lets the runtime create the pty at that size (process.consoleSize), so even the process's
# first `stty size` sees it; a size arriving later is applied to the running terminal.
_FIRST_SIZE_WAIT_S = 0.5
# How long a stop waits for the runtime to record the pid of a process it is starting.
_START_TIMEOUT_S = 10.0
_PID_FILE_POLL_S = 0.005
# Runtimes that hand the pty master to a console socket while staying in the foreground.
_SENDS_TERMINAL = frozenset({"crun"})
# Given to the runtime relative to its working directory: the full path may not fit in a
# unix socket address (108 bytes).
_CONSOLE_SOCKET = "console.sock"

Output = Coroutine[Any, Any, None]


async def exec_streaming(
    runtime: OciRuntime,
    container_id: str,
    bundle: Path,
    process_spec: dict[str, Any],
    client: StdioClient,
) -> int:
    """Run process_spec in the container with its stdio connected to client and return its
    exit code (128 + signal when killed) once its output is drained.

    If the client goes away first, the process is killed. Raises ContainerRuntimeFailed when
    the runtime could not start the process.
    """
    # In the bundle, as exec_sync's scratch files: removing the container removes leftovers.
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="exec-", dir=bundle))
    session = _Session(runtime, container_id, client, scratch)
    try:
        return await session.run(process_spec)
    finally:
        await session.close()
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)


class _Session:
    """One exec: its scratch dir, the runtime's process, the copying tasks and their fds."""

    def __init__(
        self, runtime: OciRuntime, container_id: str, client: StdioClient, scratch: Path
    ) -> None:
        self.runtime = runtime
        self.container_id = container_id
        self.client = client
        self.scratch = scratch
        self.pid_file = scratch / "pid"
        self.log = log.bind(container_id=container_id)
        self.proc: asyncio.subprocess.Process | None = None
        self.tasks: list[asyncio.Future[Any]] = []
        self.fds: list[int] = []  # closed at the end unless closed before
        self.listener: socket.socket | None = None

    async def run(self, process_spec: dict[str, Any]) -> int:
        sizes = _Sizes() if self.client.tty else None
        first = None
        if sizes is not None:
            self._spawn(sizes.follow(self.client.resizes()))
            first = await sizes.first(_FIRST_SIZE_WAIT_S)
        spec = _process(process_spec, tty=self.client.tty, size=first)
        await asyncio.to_thread((self.scratch / "process.json").write_text, json.dumps(spec))
        if sizes is None:
            outputs = await self._start_with_pipes()
        else:
            terminal = await self._start_with_terminal(first)
            outputs = []
            if terminal is not None:
                self._spawn(sizes.apply(terminal.resize, first))
                outputs = self._connect(terminal)
        return await self._wait(outputs)

    async def close(self) -> None:
        """Whatever happened: no task, process, fd or socket left behind."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._stop()
        for fd in self.fds:
            os.close(fd)
        if self.listener is not None:
            self.listener.close()

    # -- starting ------------------------------------------------------------------------

    async def _launch(
        self, *, stdin: int, stdout: int, stderr: int, console_socket: str | None = None
    ) -> asyncio.subprocess.Process:
        argv = self.runtime.exec_argv(
            self.container_id,
            process=self.scratch / "process.json",
            pid_file=self.pid_file,
            log_file=self.scratch / "runtime.log",
            console_socket=console_socket,
        )
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=self.scratch,
            # Signals for the agent's own terminal or process group are not the process's.
            start_new_session=True,
        )
        self.log.debug("exec started", runtime=self.runtime.name, tty=self.client.tty)
        return self.proc

    async def _start_with_pipes(self) -> list[Output]:
        # Pipes of our own rather than asyncio's: their ends are ours to close, even when a
        # child the process left behind still holds the other ends.
        client = self.client
        stdin, stdin_theirs = self._pipe(client.stdin, into_process=True)
        stdout, stdout_theirs = self._pipe(client.stdout, into_process=False)
        stderr, stderr_theirs = self._pipe(client.stderr, into_process=False)
        await self._launch(stdin=stdin_theirs, stdout=stdout_theirs, stderr=stderr_theirs)
        for fd in (stdin_theirs, stdout_theirs, stderr_theirs):
            if fd >= 0:
                self._close(fd)
        if stdin is not None:
            self._spawn(self._forward_stdin(stdin))
        outputs = []
        if stdout is not None:
            outputs.append(_copy(functools.partial(_read_fd, stdout), client.write_stdout))
        if stderr is not None:
            outputs.append(_copy(functools.partial(_read_fd, stderr), client.write_stderr))
        return outputs

    def _pipe(self, wanted: bool, *, into_process: bool) -> tuple[int | None, int]:
        """(our end, the runtime's end) of a new pipe; (None, DEVNULL) when not wanted."""
        if not wanted:
            return None, asyncio.subprocess.DEVNULL
        read, write = os.pipe2(os.O_CLOEXEC)
        self.fds += [read, write]
        ours, theirs = (write, read) if into_process else (read, write)
        # Ours only: O_NONBLOCK on their end would be shared with the process.
        os.set_blocking(ours, False)
        return ours, theirs

    async def _forward_stdin(self, fd: int) -> None:
        """Until the client closes stdin; closing the pipe then gives the process its EOF."""
        try:
            while data := await self.client.read_stdin():
                await _write_fd(fd, data)
        except BrokenPipeError:
            pass  # the process closed its stdin: nobody reads any more
        finally:
            self._close(fd)

    async def _start_with_terminal(self, size: TerminalSize | None) -> _Terminal | None:
        """The terminal, or None when the runtime ended or the client left before one came."""
        if self.runtime.binary.name in _SENDS_TERMINAL:
            return await self._receive_terminal()
        master, slave = os.openpty()
        self.fds += [master, slave]
        # Raw as the runtime would make it, but from the start: input that arrives before
        # the runtime gets to it must not be echoed or translated by our pty too.
        tty.setraw(slave)
        if size is not None:
            # The runtime copies our size to its pty at start: it must be right already.
            _set_size(master, size)
        proc = await self._launch(stdin=slave, stdout=slave, stderr=asyncio.subprocess.DEVNULL)
        self._close(slave)
        os.set_blocking(master, False)
        return _Terminal(master, proxy_pid=proc.pid)

    async def _receive_terminal(self) -> _Terminal | None:
        self.listener = listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        directory = os.open(self.scratch, os.O_PATH | os.O_CLOEXEC)
        try:
            listener.bind(f"/proc/self/fd/{directory}/{_CONSOLE_SOCKET}")
        finally:
            os.close(directory)
        listener.listen(1)
        listener.setblocking(False)
        null = asyncio.subprocess.DEVNULL
        proc = await self._launch(
            stdin=null, stdout=null, stderr=null, console_socket=_CONSOLE_SOCKET
        )
        received = asyncio.ensure_future(_receive_fd(listener))
        others = [
            asyncio.ensure_future(proc.wait()),
            asyncio.ensure_future(self.client.wait_gone()),
        ]
        try:
            await asyncio.wait([received, *others], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in others:
                waiter.cancel()
            if not received.done():
                received.cancel()
            await asyncio.gather(received, *others, return_exceptions=True)
        if received.cancelled():
            return None
        master = received.result()
        self.fds.append(master)
        os.set_blocking(master, False)
        return _Terminal(master)

    def _connect(self, terminal: _Terminal) -> list[Output]:
        if self.client.stdin:
            self._spawn(_type_into(terminal.master, self.client))
        write = self.client.write_stdout if self.client.stdout else _discard
        return [_copy(functools.partial(_read_fd, terminal.master), write)]

    # -- ending --------------------------------------------------------------------------

    async def _wait(self, outputs: list[Output]) -> int:
        proc = self.proc
        assert proc is not None
        finished: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(proc.wait(), *outputs))
        gone: asyncio.Future[Any] = asyncio.ensure_future(self.client.wait_gone())
        self.tasks += [finished, gone]
        await asyncio.wait([finished, gone], return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            self.log.info("exec client went away: killing the process")
            await self._stop()
            assert proc.returncode is not None
            return proc.returncode
        finished.result()
        code = proc.returncode
        assert code is not None
        if code != 0 and _read_pid(self.pid_file) is None:
            raise ContainerRuntimeFailed(
                f"exec in container {self.container_id}: {self._runtime_error(code)}"
            )
        self.log.debug("exec finished", exit_code=code)
        return code

    async def _stop(self) -> None:
        """Kill the process and reap the runtime. The runtime waits for the process, and
        killing it alone would leave the process running: the pid file says whom to kill."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        pid = await self._started_pid(proc)
        with contextlib.suppress(ProcessLookupError):
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            elif proc.returncode is None:
                proc.kill()  # stuck before the process started
        await proc.wait()

    async def _started_pid(self, proc: asyncio.subprocess.Process) -> int | None:
        """The process's pid, or None when the runtime ended without starting it. The
        runtime writes the pid file just after the process started: a process already
        running (its output may be here) is waited for, not orphaned by killing its
        runtime. Polled, as nothing announces the file."""
        exited = asyncio.ensure_future(proc.wait())
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                while not exited.done():
                    if (pid := _read_pid(self.pid_file)) is not None:
                        return pid
                    await asyncio.wait([exited], timeout=_PID_FILE_POLL_S)
        except TimeoutError:
            self.log.warning("exec runtime wrote no pid file", timeout_s=_START_TIMEOUT_S)
        finally:
            exited.cancel()
        return None

    def _runtime_error(self, code: int) -> str:
        try:
            text = (self.scratch / "runtime.log").read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return runtime_message(text) or f"{self.runtime.name} exec exited with code {code}"

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    def _close(self, fd: int) -> None:
        self.fds.remove(fd)
        os.close(fd)


# -- terminal --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Terminal:
    master: int
    # A runtime copying between our pty and its own learns of a resize by SIGWINCH, as it
    # would from its controlling terminal.
    proxy_pid: int | None = None

    def resize(self, size: TerminalSize) -> None:
        _set_size(self.master, size)
        if self.proxy_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proxy_pid, signal.SIGWINCH)


class _Sizes:
    """The client's terminal sizes. Only the latest matters, so they coalesce."""

    def __init__(self) -> None:
        self.latest: TerminalSize | None = None
        self._changed = asyncio.Event()

    async def follow(self, sizes: AsyncIterator[TerminalSize]) -> None:
        async for size in sizes:
            self.latest = size
            self._changed.set()

    async def first(self, timeout_s: float) -> TerminalSize | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        return self.latest

    async def apply(
        self, resize: Callable[[TerminalSize], None], applied: TerminalSize | None
    ) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self.latest is not None and self.latest != applied:
                resize(self.latest)
                applied = self.latest


def _set_size(fd: int, size: TerminalSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


async def _receive_fd(listener: socket.socket) -> int:
    """The pty master the runtime sends (SCM_RIGHTS) to the console socket."""
    conn, _ = await asyncio.get_running_loop().sock_accept(listener)
    with conn:
        await _fd_ready(conn.fileno())
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1, socket.MSG_CMSG_CLOEXEC)
    if not fds:
        raise ContainerRuntimeFailed("the runtime closed its console socket without a terminal")
    return fds[0]


async def _type_into(master: int, client: StdioClient) -> None:
    # A terminal has no end of input to pass on (closing the master would hang up the
    # process), so the client closing stdin only ends the copy.
    try:
        while data := await client.read_stdin():
            await _write_fd(master, data)
    except OSError as exc:
        if exc.errno != errno.EIO:  # the process and its terminal are gone
            raise


# -- plumbing --------------------------------------------------------------------------------


def _process(spec: dict[str, Any], *, tty: bool, size: TerminalSize | None) -> dict[str, Any]:
    process = {**spec, "terminal": tty}
    process.pop("consoleSize", None)
    if size is not None:
        process["consoleSize"] = {"height": size.height, "width": size.width}
    return process


async def _copy(
    read: Callable[[int], Awaitable[bytes]], write: Callable[[bytes], Awaitable[None]]
) -> None:
    while data := await read(_CHUNK):
        await write(data)


async def _discard(data: bytes) -> None:
    """Output nobody asked for still has to be read, or the process would block on it."""


async def _read_fd(fd: int, size: int) -> bytes:
    """Up to size bytes, b"" at the end. A pty master fails with EIO once every slave is
    closed: that is its end of file."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await _fd_ready(fd)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _fd_ready(fd, write=True)


async def _fd_ready(fd: int, *, write: bool = False) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
