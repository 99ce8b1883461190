"""Network probes for tests: pod netns listeners, pings, free ports, the node's address."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from network.netns import in_netns

REPLY = b"hello from the pod\n"
T = TypeVar("T")


def in_new_thread(fn: Callable[[], T]) -> T:
    """Run fn on a fresh thread, as the agent's worker pool does, and return its result.

    Namespace switches stay on that thread and never leak into the test's own.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def free_port() -> int:
    """A TCP port nobody on the node listens on (tests in parallel pick different ones)."""
    while True:
        port = random.randint(20000, 60000)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port


@contextlib.contextmanager
def pod_listener(netns_pin: str, port: int) -> Iterator[None]:
    """A TCP server on 0.0.0.0:port inside the pod's netns that greets each client."""
    server: list[socket.socket] = []

    def listen() -> None:
        # A socket belongs to the netns its creating thread was in, for its whole life.
        with in_netns(Path(netns_pin)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen()
        server.append(sock)

    opener = threading.Thread(target=listen)
    opener.start()
    opener.join()
    sock = server[0]
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with client:
                client.sendall(REPLY)

    server_thread = threading.Thread(target=serve, daemon=True)
    server_thread.start()
    try:
        yield
    finally:
        stop.set()
        server_thread.join()
        sock.close()


def fetch(host: str, port: int, timeout_s: float = 3.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        return conn.recv(100)


def fetch_from_pod(netns_pin: str, host: str, port: int) -> str:
    """Connect from inside a pod (busybox nc), returning what the server sent."""
    done = subprocess.run(
        ["nsenter", f"--net={netns_pin}", "busybox", "nc", "-w", "3", host, str(port)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return done.stdout


def pings(netns_pin: str, address: str) -> bool:
    done = subprocess.run(
        ["nsenter", f"--net={netns_pin}", "busybox", "ping", "-c", "1", "-W", "2", address],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return done.returncode == 0


def node_ipv4() -> str:
    """The node's first global IPv4 address (not loopback, not a pod bridge)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        name, address = line.split()[1], line.split()[3].split("/")[0]
        if not name.startswith(("mre", "moorage", "mr", "cni")):
            return address
    raise AssertionError(f"no node address in:\n{out}")
