"""kubectl exec, attach and port-forward, the real client-go client, against the agent's
streaming server: a fake API server hands each upgrade request to the URL of the CRI call and
copies the bytes as the kubelet's proxy does. Every case runs over SPDY and over WebSocket."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fcntl import ioctl
from pathlib import Path

import pytest

from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.containers import Pod, container_config, exec_sync, pulled
from tests.e2e.fake_apiserver import FakeApiServer, FakePod
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

KUBECTL = Path("/usr/bin/kubectl")
if not KUBECTL.exists():
    pytest.skip(f"needs {KUBECTL}", allow_module_level=True)

TIMEOUT_S = 20.0
TRANSPORTS = {
    "spdy": {
        "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false",
        "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false",
    },
    "websocket": {
        "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true",
        "KUBECTL_PORT_FORWARD_WEBSOCKETS": "true",
    },
}
# The Upgrade header kubectl sends for each transport.
UPGRADES = {"spdy": "SPDY/3.1", "websocket": "websocket"}


@pytest.fixture(scope="module")
def shared_agent() -> Iterator[Agent]:
    """One agent for the module: kubectl is what these tests vary, not the agent."""
    factory = AgentFactory()
    try:
        yield factory()
    finally:
        problems = factory.cleanup()
        if problems:
            pytest.fail("cleanup after the tests failed:\n" + "\n".join(problems))


@pytest.fixture(scope="module")
def image(shared_agent: Agent, registry: LocalRegistry) -> str:
    return pulled(shared_agent, registry)


@pytest.fixture(scope="module")
def apiserver(shared_agent: Agent, image: str) -> Iterator[FakeApiServer]:
    with FakeApiServer(shared_agent) as server:
        pod = Pod(shared_agent)
        shell = pod.run(container_config(image, ["sleep", "600"], name="c"))
        server.pods["shell"] = FakePod(pod.id, {"c": shell})
        yield server


@dataclass
class Kubectl:
    """kubectl on a private HOME and KUBECONFIG, one transport; kills what it started."""

    apiserver: FakeApiServer
    home: Path
    transport: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.home / "kubeconfig"),
            **TRANSPORTS[self.transport],
        }

    def argv(self, args: tuple[str, ...]) -> list[str]:
        return [str(KUBECTL), "--v=0", *args]

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(args),
            input=stdin,
            capture_output=True,
            env=self.env(),
            timeout=TIMEOUT_S,
            check=False,
        )

    def start(
        self,
        *args: str,
        stdin: int = subprocess.DEVNULL,
        stdout: int = subprocess.PIPE,
        stderr: int = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            self.argv(args),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=self.env(),
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=TIMEOUT_S)
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()

    def assert_upgraded(self, subresource: str) -> None:
        """Every request went over the chosen transport and the runtime switched protocols
        (kubectl falls back from WebSocket to SPDY silently)."""
        proxied = self.apiserver.proxied
        assert proxied, "kubectl made no streaming request"
        for request in proxied:
            assert (request.subresource, request.upgrade, request.status) == (
                subresource,
                UPGRADES[self.transport],
                101,
            ), proxied
            assert request.chosen in request.offered.split(", "), proxied


@pytest.fixture(params=sorted(TRANSPORTS))
def kubectl(
    request: pytest.FixtureRequest, apiserver: FakeApiServer, tmp_path: Path
) -> Iterator[Kubectl]:
    apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    apiserver.proxied.clear()
    tool = Kubectl(apiserver, tmp_path, request.param)
    try:
        yield tool
    finally:
        tool.stop_all()


def read_until(fd: int, pattern: bytes, deadline: float) -> tuple[bytes, re.Match[bytes]]:
    """Read fd until pattern matches what was read; returns it all and the match."""
    seen = b""
    while (match := re.search(pattern, seen)) is None:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {pattern!r} in {seen!r}"
        if select.select([fd], [], [], remaining)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty's master once the slave side is gone
                chunk = b""
            assert chunk, f"EOF before {pattern!r} in {seen!r}"
            seen += chunk
    return seen, match


def test_exec_separates_stdout_and_stderr_and_returns_the_exit_code(kubectl: Kubectl) -> None:
    script = "echo out; echo err >&2; exit 5"
    done = kubectl.run("exec", "shell", "-c", "c", "--", "sh", "-c", script)

    # kubectl itself adds the last line, from the exit code in the runtime's status.
    stderr = b"err\ncommand terminated with exit code 5\n"
    assert (done.stdout, done.stderr, done.returncode) == (b"out\n", stderr, 5)
    kubectl.assert_upgraded("exec")


def test_exec_with_stdin_echoes_it_back(kubectl: Kubectl) -> None:
    data = bytes(range(256)) * 1024 + b"end\n"
    done = kubectl.run("exec", "-i", "shell", "--", "cat", stdin=data)

    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    kubectl.assert_upgraded("exec")


def test_exec_with_a_tty_sees_the_terminals_size(kubectl: Kubectl) -> None:
    master, slave = pty.openpty()
    try:
        ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 123, 0, 0))
        script = "stty size; exit 3"
        process = kubectl.start(
            "exec",
            "-it",
            "shell",
            "--",
            "sh",
            "-c",
            script,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        read_until(master, rb"45 123\r\n", time.monotonic() + TIMEOUT_S)
        assert process.wait(timeout=TIMEOUT_S) == 3
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    kubectl.assert_upgraded("exec")


def test_port_forward_carries_bytes_both_ways(
    kubectl: Kubectl, shared_agent: Agent, image: str
) -> None:
    pod = Pod(shared_agent)
    server = "nc -l -p 8080 -e sh -c 'read line; echo \"pod got $line\"'"
    container_id = pod.run(container_config(image, ["sh", "-c", server], name="listener"))
    kubectl.apiserver.pods["listener"] = FakePod(pod.id, {"listener": container_id})
    wait_listening(shared_agent, container_id, 8080)
    process = kubectl.start("port-forward", "--address", "127.0.0.1", "pod/listener", ":8080")
    assert process.stdout is not None
    deadline = time.monotonic() + TIMEOUT_S
    _, ready = read_until(process.stdout.fileno(), rb"Forwarding from 127\.0\.0\.1:(\d+)", deadline)

    with socket.create_connection(("127.0.0.1", int(ready[1])), timeout=TIMEOUT_S) as conn:
        conn.sendall(b"hello\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk

    assert answer == b"pod got hello\n"
    process.send_signal(signal.SIGINT)
    process.wait(timeout=TIMEOUT_S)
    kubectl.assert_upgraded("portforward")


def test_attach_streams_a_running_containers_output(
    kubectl: Kubectl, shared_agent: Agent, image: str
) -> None:
    pod = Pod(shared_agent)
    ticker = "while true; do echo tick; sleep 0.1; done"
    container_id = pod.run(container_config(image, ["sh", "-c", ticker], name="ticker"))
    kubectl.apiserver.pods["ticker"] = FakePod(pod.id, {"ticker": container_id})
    process = kubectl.start("attach", "ticker", "-c", "ticker")
    assert process.stdout is not None

    read_until(process.stdout.fileno(), rb"tick\ntick\n", time.monotonic() + TIMEOUT_S)

    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    process.wait(timeout=TIMEOUT_S)
    kubectl.assert_upgraded("attach")


def test_attach_with_stdin_feeds_the_containers_process(
    kubectl: Kubectl, shared_agent: Agent, image: str
) -> None:
    pod = Pod(shared_agent)
    config = container_config(image, ["cat"], name="cat", stdin=True, stdin_once=True)
    container_id = pod.run(config)
    kubectl.apiserver.pods["cat"] = FakePod(pod.id, {"cat": container_id}, stdin=frozenset({"cat"}))

    # stdin_once: kubectl's end of stdin closes cat's, cat exits and so does the attach.
    done = kubectl.run("attach", "-i", "cat", stdin=b"through attach\n")

    assert done.returncode == 0, done.stderr
    assert done.stdout == b"through attach\n"
    kubectl.assert_upgraded("attach")


def wait_listening(agent: Agent, container_id: str, port: int) -> None:
    """Until something in the container listens on port (hex in /proc/net/tcp, tcp6)."""
    needle = f":{port:04X} "

    def listening() -> bool:
        tables = ["cat", "/proc/net/tcp", "/proc/net/tcp6"]
        return needle in exec_sync(agent, container_id, tables).stdout.decode()

    assert wait_until(listening), f"nothing listens on {port}"


def test_exec_of_a_missing_binary_fails_with_a_message(kubectl: Kubectl) -> None:
    done = kubectl.run("exec", "shell", "--", "/no/such/binary")

    # A failure without an exit code: kubectl shows the status message and exits 1.
    assert done.returncode == 1
    assert b"error: " in done.stderr and b"/no/such/binary" in done.stderr
    kubectl.assert_upgraded("exec")
