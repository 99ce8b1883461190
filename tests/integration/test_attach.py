"""Attach to real busybox containers through conmon's attach socket, with crun and runc."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.containers.exit_watcher import ExitWatcher
from runtime.oci.conmon import ConmonError
from runtime.oci.exit_files import exit_recorded
from runtime.streaming.attach import attach
from tests.integration import test_conmon
from tests.integration.test_conmon import BUSYBOX, CONMON, Host
from tests.integration.test_exec_stream import WAIT_S, FakeClient, own_fds, run_container

pytestmark = [
    pytest.mark.skipif(not CONMON.is_file(), reason="needs conmon"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs busybox-static"),
]

# The conmon tests' fixture: one test directory and runtime, runc and crun in turn.
host = test_conmon.host


def attach_socket(host: Host, container_id: str) -> Path:
    """As CRI-O reaches it: through conmon's symlink to the bundle in the socket dir."""
    return host.base / "attach" / container_id / "attach"


async def test_attach_receives_output_and_detaching_leaves_the_container_running(
    host: Host,
) -> None:
    script = "while true; do echo out; echo err >&2; sleep 0.05; done"
    container_id, bundle = await run_container(host, ["/bin/sh", "-c", script])
    fds_before = own_fds()
    client = FakeClient()
    attached = asyncio.create_task(
        attach(attach_socket(host, container_id), bundle / "ctl", client, stdin_allowed=False)
    )
    await client.wait_output(lambda: b"out\nout\n" in client.out and b"err\nerr\n" in client.err)
    assert set(bytes(client.out).splitlines()) == {b"out"}
    assert set(bytes(client.err).splitlines()) == {b"err"}
    client.go_away()
    await asyncio.wait_for(attached, WAIT_S)
    assert own_fds() <= fds_before
    state = await host.runtime.state(container_id)
    assert state is not None and state["status"] == "running"
    assert not exit_recorded(host.exits / container_id)

    again = FakeClient(stderr=False)
    attached = asyncio.create_task(
        attach(attach_socket(host, container_id), bundle / "ctl", again, stdin_allowed=False)
    )
    await again.wait_output(lambda: b"out\n" in again.out)
    again.go_away()
    await asyncio.wait_for(attached, WAIT_S)


async def test_stdin_reaches_the_container_and_closing_it_ends_a_stdin_once_container(
    host: Host,
) -> None:
    container_id, bundle = await run_container(host, ["/bin/cat"], stdin=True, stdin_once=True)
    client = FakeClient(stdin=True, stderr=False)
    attached = asyncio.create_task(
        attach(attach_socket(host, container_id), bundle / "ctl", client, stdin_allowed=True)
    )
    client.send(b"hello ")
    client.send(b"x" * 100_000 + b"\n")  # longer than one of conmon's socket reads
    await client.wait_output(lambda: client.out.endswith(b"\n"))
    assert client.out == b"hello " + b"x" * 100_000 + b"\n"
    client.close_stdin()
    # cat sees the end of its input and exits; conmon follows, and with it the output.
    await asyncio.wait_for(attached, WAIT_S)
    assert await _exit_code(host, container_id) == 0


async def test_stdin_is_not_forwarded_unless_allowed(host: Host) -> None:
    container_id, bundle = await run_container(host, ["/bin/cat"], stdin=True)
    client = FakeClient(stdin=True, stderr=False)
    socket_path = attach_socket(host, container_id)
    attached = asyncio.create_task(attach(socket_path, bundle / "ctl", client, stdin_allowed=False))
    client.send(b"ignored\n")
    # Another attach that may write proves the first one's stdin never got through.
    writer = FakeClient(stdin=True, stdout=False, stderr=False)
    writing = asyncio.create_task(attach(socket_path, bundle / "ctl", writer, stdin_allowed=True))
    writer.send(b"written\n")
    await client.wait_output(lambda: b"written\n" in client.out)
    assert client.out == b"written\n"
    for each in (client, writer):
        each.go_away()
    await asyncio.wait_for(asyncio.gather(attached, writing), WAIT_S)


async def test_a_terminal_attach_resizes_through_conmon(host: Host) -> None:
    script = "while read line; do stty size; done"
    container_id, bundle = await run_container(
        host, ["/bin/sh", "-c", script], tty=True, stdin=True
    )
    client = FakeClient(stdin=True, stderr=False, tty=True)
    attached = asyncio.create_task(
        attach(attach_socket(host, container_id), bundle / "ctl", client, stdin_allowed=True)
    )
    client.resize(width=120, height=40)
    # The resize travels through conmon on its own path: ask until the new size shows.
    async with asyncio.timeout(WAIT_S):
        while b"40 120" not in client.out:
            answered = client.out.count(b"\n") + 2  # the echoed newline, then the size
            client.send(b"\n")
            await client.wait_lines(answered)
    client.go_away()
    await asyncio.wait_for(attached, WAIT_S)
    state = await host.runtime.state(container_id)
    assert state is not None and state["status"] == "running"


async def test_attach_without_conmon_fails_clearly(host: Host, tmp_path: Path) -> None:
    with pytest.raises(ConmonError, match="cannot attach"):
        await attach(
            tmp_path / "nothing" / "attach", tmp_path / "ctl", FakeClient(), stdin_allowed=False
        )
    container_id, bundle = await run_container(host, ["/bin/true"])
    await _exit_code(host, container_id)
    with pytest.raises(ConmonError, match="cannot attach"):
        await attach(
            attach_socket(host, container_id), bundle / "ctl", FakeClient(), stdin_allowed=False
        )


async def _exit_code(host: Host, container_id: str) -> int:
    """The container's exit code, as soon as conmon records it."""
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_exit(cid: str, code: int) -> None:
        if cid == container_id and not exited.done():
            exited.set_result(code)

    watcher = ExitWatcher(host.exits, on_exit)
    watcher.start()
    try:
        return await asyncio.wait_for(exited, WAIT_S)
    finally:
        watcher.close()
