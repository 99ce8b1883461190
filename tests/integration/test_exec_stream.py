"""Interactive exec into real busybox containers under conmon, with crun and runc."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from runtime.errors import ContainerRuntimeFailed
from runtime.host.processes import find_by_environment, is_running
from runtime.oci.conmon import create_container
from runtime.streaming.exec import exec_streaming
from runtime.streaming.streams import TerminalSize
from tests.integration import test_conmon
from tests.integration.test_conmon import BUSYBOX, CONMON, Host, process

pytestmark = [
    pytest.mark.skipif(not CONMON.is_file(), reason="needs conmon"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs busybox-static"),
]

# The conmon tests' fixture: one test directory and runtime, runc and crun in turn.
host = test_conmon.host
T = TypeVar("T")
WAIT_S = 10.0
# One process that stays the same (no exec, no child) and waits for ever, whatever its stdin
# does: on a FIFO nobody opens for writing.
WAITS_FOREVER = ["/bin/sh", "-c", "mkfifo /dev/hold && echo started && read line </dev/hold"]
# A terminal needs /dev/pts (and /dev/ptmx, which the runtimes link there on a /dev tmpfs).
DEV_MOUNTS = [
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
    },
]


class FakeClient:
    """The client's side of an exec or attach, in memory: what the test sends, what it got."""

    def __init__(
        self, *, stdin: bool = False, stdout: bool = True, stderr: bool = True, tty: bool = False
    ) -> None:
        self._wants = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "tty": tty}
        self.out = bytearray()
        self.err = bytearray()
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self._sizes: asyncio.Queue[TerminalSize] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._wrote = asyncio.Event()

    @property
    def stdin(self) -> bool:
        return self._wants["stdin"]

    @property
    def stdout(self) -> bool:
        return self._wants["stdout"]

    @property
    def stderr(self) -> bool:
        return self._wants["stderr"]

    @property
    def tty(self) -> bool:
        return self._wants["tty"]

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    # -- what the test does ---------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self._stdin.put_nowait(data)

    def close_stdin(self) -> None:
        self._stdin.put_nowait(b"")

    def resize(self, width: int, height: int) -> None:
        self._sizes.put_nowait(TerminalSize(width=width, height=height))

    def go_away(self) -> None:
        self._gone.set()

    async def wait_output(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not check():
                self._wrote.clear()
                await self._wrote.wait()

    async def wait_lines(self, count: int) -> None:
        await self.wait_output(lambda: self.out.count(b"\n") >= count)

    # -- what the runtime side calls -------------------------------------------------------

    async def read_stdin(self) -> bytes:
        assert self.stdin, "stdin read though the client did not ask for it"
        data = await self._unless_gone(self._stdin)
        return data or b""

    async def write_stdout(self, data: bytes) -> None:
        assert self.stdout, "stdout written though the client did not ask for it"
        self.out += data
        self._wrote.set()

    async def write_stderr(self, data: bytes) -> None:
        assert self.stderr, "stderr written though the client did not ask for it"
        self.err += data
        self._wrote.set()

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        while (size := await self._unless_gone(self._sizes)) is not None:
            yield size

    async def wait_gone(self) -> None:
        await self._gone.wait()

    async def _unless_gone(self, queue: asyncio.Queue[T]) -> T | None:
        item = asyncio.ensure_future(queue.get())
        gone = asyncio.ensure_future(self._gone.wait())
        await asyncio.wait([item, gone], return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if item.done():
            return item.result()
        item.cancel()
        return None


async def run_container(
    host: Host,
    args: list[str],
    *,
    tty: bool = False,
    stdin: bool = False,
    stdin_once: bool = False,
) -> tuple[str, Path]:
    """A started container under conmon, with a /dev/pts for terminals; the host fixture
    removes it."""
    container_id, bundle = host.bundle(args)
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"] += DEV_MOUNTS
    config["process"]["terminal"] = tty
    (bundle / "config.json").write_text(json.dumps(config))
    await create_container(
        CONMON,
        host.runtime,
        container_id=container_id,
        bundle=bundle,
        log_path=bundle / "ctr.log",
        exit_dir=host.exits,
        socket_dir=host.base / "attach",
        tty=tty,
        stdin=stdin,
        stdin_once=stdin_once,
    )
    await host.runtime.start(container_id)
    return container_id, bundle


def own_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def own_children() -> list[int]:
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
                children.append(int(entry.name))
    return children


def footprint() -> tuple[set[str], set[int]]:
    """Our fds and children: other tests' (a registry, agents) may be there already."""
    return own_fds(), set(own_children())


def assert_nothing_left(bundle: Path, before: tuple[set[str], set[int]]) -> None:
    assert not [p.name for p in bundle.iterdir() if p.name.startswith("exec-")]
    assert own_fds() <= before[0]
    assert set(own_children()) <= before[1]


@pytest.fixture
async def sleeper(host: Host) -> tuple[str, Path]:
    return await run_container(host, ["/bin/sleep", "600"])


# -- tests ----------------------------------------------------------------------------------


async def test_output_and_exit_code_with_stdout_and_stderr_apart(
    host: Host, sleeper: tuple[str, Path]
) -> None:
    container_id, bundle = sleeper
    client = FakeClient()
    before = footprint()
    script = "echo out; echo err >&2; printf more; exit 7"
    code = await exec_streaming(
        host.runtime, container_id, bundle, process(["/bin/sh", "-c", script]), client
    )
    assert code == 7
    assert (bytes(client.out), bytes(client.err)) == (b"out\nmore", b"err\n")
    assert_nothing_left(bundle, before)


async def test_large_output_is_drained_before_the_exit_code(
    host: Host, sleeper: tuple[str, Path]
) -> None:
    container_id, bundle = sleeper
    client = FakeClient()
    # 4 MiB through a 64 KiB pipe: only a reader keeping up lets the process finish.
    script = "i=0; while [ $i -lt 4096 ]; do printf '%01023d\\n' $i; i=$((i+1)); done"
    code = await exec_streaming(
        host.runtime, container_id, bundle, process(["/bin/sh", "-c", script]), client
    )
    assert code == 0
    assert len(client.out) == 4096 * 1024
    assert client.out.endswith(b"%01023d\n" % 4095)


async def test_stdin_reaches_the_process_and_closing_it_ends_the_process(
    host: Host, sleeper: tuple[str, Path]
) -> None:
    container_id, bundle = sleeper
    client = FakeClient(stdin=True, stderr=False)
    before = footprint()
    running = asyncio.create_task(
        exec_streaming(host.runtime, container_id, bundle, process(["/bin/cat"]), client)
    )
    client.send(b"hello ")
    client.send(b"world\n")
    await client.wait_output(lambda: client.out == b"hello world\n")
    assert not running.done()
    client.close_stdin()
    assert await asyncio.wait_for(running, WAIT_S) == 0
    assert_nothing_left(bundle, before)


async def test_without_stdin_the_process_reads_end_of_file(
    host: Host, sleeper: tuple[str, Path]
) -> None:
    container_id, bundle = sleeper
    client = FakeClient()
    code = await exec_streaming(
        host.runtime, container_id, bundle, process(["/bin/sh", "-c", "cat; echo done"]), client
    )
    assert (code, bytes(client.out)) == (0, b"done\n")


async def test_a_terminal_has_the_client_size_from_the_start_and_follows_resizes(
    host: Host, sleeper: tuple[str, Path]
) -> None:
    container_id, bundle = sleeper
    client = FakeClient(stdin=True, stderr=False, tty=True)
    before = footprint()
    client.resize(width=101, height=33)
    script = "stty size; while read line; do stty size; done"
    running = asyncio.create_task(
        exec_streaming(
            host.runtime, container_id, bundle, process(["/bin/sh", "-c", script]), client
        )
    )
    await client.wait_output(lambda: b"\n" in client.out)
    assert client.out == b"33 101\r\n"
    client.resize(width=120, height=40)
    # The resize reaches the terminal on its own path: ask again until the new size shows.
    async with asyncio.timeout(WAIT_S):
        while b"40 120" not in client.out:
            answered = client.out.count(b"\n") + 2  # the echoed newline, then the size
            client.send(b"\n")
            await client.wait_lines(answered)
    client.send(b"\x04")  # end of file at the start of a line: the loop's read fails
    assert await asyncio.wait_for(running, WAIT_S) == 0
    assert_nothing_left(bundle, before)


async def test_a_terminal_echoes_input_and_merges_stderr(
    host: Host, sleeper: tuple[str, Path]
) -> None:
    container_id, bundle = sleeper
    client = FakeClient(stdin=True, stderr=False, tty=True)
    client.resize(width=80, height=24)
    script = 'read line; echo "got $line" >&2; exit 3'
    running = asyncio.create_task(
        exec_streaming(
            host.runtime, container_id, bundle, process(["/bin/sh", "-c", script]), client
        )
    )
    client.send(b"ping\n")
    assert await asyncio.wait_for(running, WAIT_S) == 3
    assert client.out == b"ping\r\ngot ping\r\n"


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
async def test_the_client_going_away_kills_the_process(
    host: Host, sleeper: tuple[str, Path], tty: bool
) -> None:
    container_id, bundle = sleeper
    client = FakeClient(stdin=True, stderr=False, tty=tty)
    client.resize(width=80, height=24)
    before = footprint()
    marker = uuid.uuid4().hex
    spec = process(WAITS_FOREVER, [f"EXEC_MARKER={marker}"])
    running = asyncio.create_task(exec_streaming(host.runtime, container_id, bundle, spec, client))
    await client.wait_output(lambda: b"started" in client.out)
    (found,) = find_by_environment("EXEC_MARKER", marker)
    assert is_running(found)
    client.go_away()
    code = await asyncio.wait_for(running, WAIT_S)
    assert code == 128 + 9
    assert not is_running(found)
    assert_nothing_left(bundle, before)
    # The container itself lives on.
    state = await host.runtime.state(container_id)
    assert state is not None and state["status"] == "running"


async def test_a_command_that_cannot_run_raises_the_runtime_message(
    host: Host, sleeper: tuple[str, Path]
) -> None:
    container_id, bundle = sleeper
    before = footprint()
    for tty in (False, True):
        client = FakeClient(tty=tty, stderr=not tty)
        with pytest.raises(ContainerRuntimeFailed, match="nonexistent"):
            await exec_streaming(
                host.runtime, container_id, bundle, process(["/bin/nonexistent"]), client
            )
    assert_nothing_left(bundle, before)


async def test_cancelling_the_exec_kills_the_process(host: Host, sleeper: tuple[str, Path]) -> None:
    container_id, bundle = sleeper
    client = FakeClient()
    marker = uuid.uuid4().hex
    spec = process(WAITS_FOREVER, [f"EXEC_MARKER={marker}"])
    children_before = set(own_children())
    running = asyncio.create_task(exec_streaming(host.runtime, container_id, bundle, spec, client))
    await client.wait_output(lambda: b"started" in client.out)
    (found,) = find_by_environment("EXEC_MARKER", marker)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not is_running(found)
    assert set(own_children()) <= children_before
