"""Attach: a streaming client joins a running container's stdio, which conmon holds.

conmon serves the stdio on a SOCK_SEQPACKET socket. Each message it sends is one read of the
container's output behind a byte naming the stream (2 stdout, 3 stderr); what we send is
written to the container's stdin as is, and our shutdown(SHUT_WR) closes that stdin unless
the container was created to leave it open. Terminal resizes go through conmon's ctl FIFO.
Detaching just closes the socket: the container runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Any

import structlog

from runtime.oci.conmon import ConmonError
from runtime.streaming.streams import StdioClient

log = structlog.get_logger(__name__)

_STDOUT = 2
_STDERR = 3
# conmon sends one read of the container's output per message (8 KiB at most in conmon 2.1)
# behind the stream byte; a receive buffer shorter than a message would cut it.
_RECEIVE_SIZE = 64 * 1024
# conmon reads stdin messages into a CONN_SOCK_BUF_SIZE (32 KiB) buffer: longer ones would
# be cut, so stdin goes in messages no longer (CRI-O copies with the same size).
_SEND_SIZE = 32 * 1024
_RESIZE = 1  # conmon's ctl message type for a terminal resize


async def attach(
    attach_socket: Path, ctl_fifo: Path, client: StdioClient, *, stdin_allowed: bool
) -> None:
    """Copy the container's output to client (and client's stdin in, when allowed) until the
    container's output ends or the client goes away. Raises ConmonError when conmon is not
    there to attach to."""
    sock = await _connect(attach_socket)
    ctl = None
    tasks: list[asyncio.Future[Any]] = []
    try:
        if client.tty:
            ctl = _open_ctl(ctl_fifo)
            tasks.append(asyncio.ensure_future(_follow_resizes(ctl, client)))
        if stdin_allowed and client.stdin:
            tasks.append(asyncio.ensure_future(_copy_stdin(sock, client)))
        output = asyncio.ensure_future(_copy_output(sock, client))
        gone = asyncio.ensure_future(client.wait_gone())
        tasks += [output, gone]
        await asyncio.wait([output, gone], return_when=asyncio.FIRST_COMPLETED)
        if output.done():
            output.result()
        else:
            log.debug("attach client went away", socket=str(attach_socket))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()
        if ctl is not None:
            os.close(ctl)


async def _connect(path: Path) -> socket.socket:
    """Connected through /proc/self/fd/N/NAME, which fits in a unix socket address (108
    bytes) however long the socket's own path is."""
    try:
        directory = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise ConmonError(f"cannot attach through {path}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(
            sock, f"/proc/self/fd/{directory}/{path.name}"
        )
    except OSError as exc:
        sock.close()
        # ECONNREFUSED: the socket file outlived its conmon.
        raise ConmonError(f"cannot attach through {path}: {exc.strerror}") from None
    finally:
        os.close(directory)
    return sock


def _open_ctl(ctl_fifo: Path) -> int:
    try:
        return os.open(ctl_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        # ENXIO: the FIFO exists but nobody reads it, i.e. conmon is gone.
        why = "conmon is not running" if exc.errno == errno.ENXIO else exc.strerror
        raise ConmonError(f"cannot resize through {ctl_fifo}: {why}") from None


async def _copy_output(sock: socket.socket, client: StdioClient) -> None:
    """Until conmon closes the socket: it exits once the container has."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            message = await loop.sock_recv(sock, _RECEIVE_SIZE)
        except ConnectionError:
            return
        if not message:
            return
        data = message[1:]
        if message[0] == _STDOUT and client.stdout and data:
            await client.write_stdout(data)
        elif message[0] == _STDERR and client.stderr and data:
            await client.write_stderr(data)


async def _copy_stdin(sock: socket.socket, client: StdioClient) -> None:
    loop = asyncio.get_running_loop()
    try:
        while data := await client.read_stdin():
            view = memoryview(data)
            for start in range(0, len(view), _SEND_SIZE):
                await loop.sock_sendall(sock, view[start : start + _SEND_SIZE])
        sock.shutdown(socket.SHUT_WR)
    except ConnectionError:
        pass  # conmon is gone: the output side sees the end too


async def _follow_resizes(ctl: int, client: StdioClient) -> None:
    async for size in client.resizes():
        # One short line is one atomic FIFO write. A full FIFO (conmon stuck) drops it; a
        # broken one means conmon is gone, and the output side sees the end too.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(ctl, f"{_RESIZE} {size.height} {size.width}\n".encode())
