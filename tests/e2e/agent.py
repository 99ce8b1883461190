"""A `moorage serve` subprocess on private temporary dirs, driven through the CRI stubs.

Everything an agent or its pods leave on the host (mounts, infra processes, cgroups, files)
is traced back to the agent's own dirs and cgroup parent, so `cleanup` can remove it without
touching anything another agent, test run or engineer owns.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from network.bridge import delete_link, pod_veths_on
from network.errors import NetworkError
from network.iptables import PodRules
from tests.e2e.kernel import (
    CGROUP_FS,
    ProcessId,
    is_alive,
    mounts_under,
    process_id,
    remove_cgroup_dir,
)
from tests.netutil import free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
MOORAGE = REPO / ".venv" / "bin" / "moorage"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 10.0
_CHANNEL_OPTIONS = [
    # The agent restarts under the same socket path: reconnect quickly, not after 1 s.
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 200),
]


class AgentFailed(Exception):
    pass


class Agent:
    """One agent's dirs, its process (when running) and CRI clients bound to its socket."""

    def __init__(
        self,
        base_dir: Path | None = None,
        extra_runtime_config: str = "",
        extra_images_config: str = "",
    ) -> None:
        token = secrets.token_hex(4)
        # Unix socket paths are limited to 108 bytes: stay short and under /tmp.
        self.base_dir = base_dir or Path(f"/tmp/mre-{token}")
        # Traversable as a node's /run is: the remapped root of a user-namespaced pod must
        # reach its rootfs below.
        self.base_dir.mkdir(mode=0o711)
        self.token = self.base_dir.name.removeprefix("mre-")
        self.socket = self.base_dir / "moorage.sock"
        self.root_dir = self.base_dir / "root"
        self.run_dir = self.base_dir / "run"
        self.log_path = self.base_dir / "agent.log"
        self.config_path = self.base_dir / "moorage.toml"
        # Read at every pull: tests write it to set mirrors and blocked registries.
        self.registries_conf = self.base_dir / "registries.conf"
        self.cgroup_parent = f"/moorage-e2e-{self.token}"
        # A bridge, chain prefix and /24 of its own, so agents never share host objects.
        self.bridge = f"mre{self.token}"
        self.chain_prefix = f"MRE{self.token.upper()}"
        self.pod_cidr = f"10.{200 + int(self.token[:2], 16) % 50}.{int(self.token[2:4], 16)}.0/24"
        # Port 0 would be any free port, but tests and scrapers need to know which.
        self.metrics_port = free_port()
        self.config_path.write_text(
            "shutdown_grace_s = 2.0\n"
            "\n"
            "[metrics]\n"
            f'address = "127.0.0.1:{self.metrics_port}"\n'
            "\n"
            "[network]\n"
            f'bridge = "{self.bridge}"\n'
            f'chain_prefix = "{self.chain_prefix}"\n'
            f'pod_cidr = "{self.pod_cidr}"\n'
            "\n"
            "[images]\n"
            f'registries_conf = "{self.registries_conf}"\n' + extra_images_config + "\n"
            "[runtime]\n"
            f'default_cgroup_parent = "{self.cgroup_parent}"\n' + extra_runtime_config
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._channel: Any = None
        self.runtime: Any = None
        self.images: Any = None
        # Infra processes seen through PodSandboxStatus(verbose), for cleanup and leak checks.
        self.seen_infra: set[ProcessId] = set()

    # --- process ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None, "the agent is not running"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def serve_argv(self) -> list[str]:
        return [
            str(MOORAGE),
            "serve",
            "--config",
            str(self.config_path),
            "--socket",
            str(self.socket),
            "--root",
            str(self.root_dir),
            "--run-dir",
            str(self.run_dir),
            "--log-level",
            "debug",
        ]

    def start(self) -> None:
        assert not self.running, "the agent is already running"
        with self.log_path.open("ab") as log:
            log.write(f"----- e2e: starting agent {time.time_ns()}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.serve_argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A ^C to pytest must not reach the agent before teardown stops it.
                start_new_session=True,
                # Anything the agent resolves against its cwd lands in its temp dir.
                cwd=self.base_dir,
            )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        assert self.process is not None
        process = self.process
        deadline = time.monotonic() + START_TIMEOUT_S
        # An exit ends the wait too: the log then says why, and waiting on would not help.
        if not wait_until(
            lambda: process.poll() is not None or _socket_accepts(self.socket), START_TIMEOUT_S
        ):
            raise AgentFailed(f"agent did not open {self.socket}:\n" + self.log_tail())
        if process.poll() is not None:
            raise AgentFailed(
                f"agent exited with {process.returncode} before serving:\n" + self.log_tail()
            )
        self._connect()
        remaining_s = max(deadline - time.monotonic(), 1.0)
        version = self.runtime.Version(
            pb.VersionRequest(), timeout=remaining_s, wait_for_ready=True
        )
        if version.runtime_name != "moorage":
            raise AgentFailed(f"unexpected Version answer: {version}")

    def _connect(self) -> None:
        self._disconnect()
        self._channel = grpc.insecure_channel(f"unix://{self.socket}", options=_CHANNEL_OPTIONS)
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.images = api_pb2_grpc.ImageServiceStub(self._channel)

    def runtime_channel(self) -> Any:
        """The agent's gRPC channel, for calls the generated stubs cannot make."""
        assert self._channel is not None, "the agent is not running"
        return self._channel

    def _disconnect(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self.runtime = self.images = None

    def terminate(
        self, timeout_s: float = STOP_TIMEOUT_S, sig: signal.Signals = signal.SIGTERM
    ) -> int:
        """SIGTERM, wait for the exit (SIGKILL after the deadline); returns the exit status."""
        self._disconnect()
        assert self.process is not None, "the agent was never started"
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AgentFailed(
                    f"agent ignored {sig.name} for {timeout_s} s:\n" + self.log_tail()
                ) from None
        return self.process.returncode

    def kill9(self) -> None:
        self._disconnect()
        assert self.process is not None, "the agent was never started"
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Stop the agent if it runs (SIGTERM), then start it again on the same dirs."""
        if self.running:
            self.terminate()
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # --- CRI helpers -----------------------------------------------------------------------

    def run_pod(self, config: Any, runtime_handler: str = "") -> str:
        response = self.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler),
            timeout=RPC_TIMEOUT_S,
        )
        pod_id: str = response.pod_sandbox_id
        self.pod_info(pod_id)  # records the infra pid for cleanup
        return pod_id

    def pod_status(self, pod_id: str) -> Any:
        return self.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT_S
        ).status

    def pod_info(self, pod_id: str) -> dict[str, Any]:
        """PodSandboxStatus(verbose) info["info"], decoded."""
        response = self.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True),
            timeout=RPC_TIMEOUT_S,
        )
        info: dict[str, Any] = json.loads(response.info["info"])
        infra_pid = info.get("pids", {}).get("infra")
        if infra_pid is not None:
            seen = process_id(int(infra_pid))
            if seen is not None:
                self.seen_infra.add(seen)
        return info

    def stop_pod(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT_S
        )

    def remove_pod(self, pod_id: str) -> None:
        self.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT_S
        )

    def list_pods(self, flt: Any = None) -> list[Any]:
        request = (
            pb.ListPodSandboxRequest() if flt is None else pb.ListPodSandboxRequest(filter=flt)
        )
        return list(self.runtime.ListPodSandbox(request, timeout=RPC_TIMEOUT_S).items)

    def list_pod_ids(self, flt: Any = None) -> set[str]:
        return {pod.id for pod in self.list_pods(flt)}

    # --- what the agent left on the host ---------------------------------------------------

    def db_rows(self) -> list[dict[str, Any]]:
        """Sandbox rows of state.db, read with a connection of our own."""
        db = self.root_dir / "state.db"
        if not db.exists():
            return []
        with contextlib.closing(sqlite3.connect(db, timeout=5.0)) as conn:
            try:
                rows = conn.execute("SELECT record FROM sandboxes").fetchall()
            except sqlite3.OperationalError:
                return []
        return [json.loads(row[0]) for row in rows]

    def db_container_ids(self) -> list[str]:
        db = self.root_dir / "state.db"
        if not db.exists():
            return []
        with contextlib.closing(sqlite3.connect(db, timeout=5.0)) as conn:
            try:
                return [row[0] for row in conn.execute("SELECT id FROM containers")]
            except sqlite3.OperationalError:
                return []

    def conmons(self) -> list[int]:
        """conmon processes supervising this agent's containers (their bundles are ours)."""
        found = []
        marker = str(self.base_dir).encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"conmon") and any(marker in a for a in argv):
                found.append(int(entry.name))
        return found

    def db_sandbox_count(self) -> int:
        with contextlib.closing(sqlite3.connect(self.root_dir / "state.db", timeout=5.0)) as conn:
            (count,) = conn.execute("SELECT count(*) FROM sandboxes").fetchone()
        return int(count)

    def recorded_infra(self) -> set[ProcessId]:
        recorded = set(self.seen_infra)
        for row in self.db_rows():
            infra = row.get("infra")
            if infra:
                recorded.add(ProcessId(int(infra["pid"]), int(infra["start_ticks"])))
        return recorded

    def cgroup_dirs(self) -> list[Path]:
        """This agent's cgroup parent in every mounted hierarchy where it exists."""
        return [
            root / self.cgroup_parent.strip("/")
            for root in sorted(CGROUP_FS.iterdir())
            if (root / self.cgroup_parent.strip("/")).is_dir()
        ]

    def leftovers(self) -> list[str]:
        """Traces of pods on the host and in the state; empty when every pod is gone."""
        found = [f"listed pod {pod_id}" for pod_id in self.list_pod_ids()]
        found += [f"state.db row {row['id']}" for row in self.db_rows()]
        found += [f"state.db container row {cid}" for cid in self.db_container_ids()]
        found += [f"conmon {pid}" for pid in self.conmons()]
        found += [f"mount {point}" for point in mounts_under(self.base_dir)]
        for directory in (
            *(self.run_dir / f"{kind}ns" for kind in ("net", "ipc", "uts")),
            self.run_dir / "sandboxes",
            self.root_dir / "sandboxes",
            self.root_dir / "containers",
            self.run_dir / "containers",
            self.run_dir / "exits",
            self.run_dir / "oci" / "runc",
            self.run_dir / "oci" / "crun",
        ):
            if directory.is_dir():
                found += [f"entry {entry}" for entry in directory.iterdir()]
        for parent in self.cgroup_dirs():
            found += [f"cgroup {child}" for child in parent.iterdir() if child.is_dir()]
        found += [f"infra process {proc.pid}" for proc in self.recorded_infra() if is_alive(proc)]
        found += [f"veth {name}" for name in pod_veths_on(self.bridge)]
        found += [f"iptables {line}" for line in self.pod_rules()]
        found += [f"ip allocation {a}" for a in self.db_allocations()]
        return found

    def pod_rules(self) -> list[str]:
        """Per-pod iptables lines of this agent (hostPort chains and jumps to them)."""
        saved = subprocess.run(
            ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True
        ).stdout
        return [line for line in saved.splitlines() if f"{self.chain_prefix}-HP-" in line]

    def db_allocations(self) -> list[str]:
        if not (self.root_dir / "state.db").exists():
            return []
        with contextlib.closing(sqlite3.connect(self.root_dir / "state.db")) as db:
            return [row[0] for row in db.execute("SELECT address FROM ip_allocations")]

    def cleanup(self) -> list[str]:
        """Remove the pods, stop the agent and take away all it left; returns what failed."""
        problems: list[str] = []
        if self.running:
            try:
                pod_ids = self.list_pod_ids()
            except grpc.RpcError as exc:
                problems.append(f"listing pods through the agent: {exc}")
                pod_ids = set()
            for pod_id in pod_ids:
                with contextlib.suppress(grpc.RpcError, json.JSONDecodeError, KeyError):
                    self.pod_info(pod_id)
                try:
                    self.remove_pod(pod_id)
                except grpc.RpcError as exc:
                    problems.append(f"removing pod {pod_id} through the agent: {exc}")
        if self.process is not None:
            try:
                self.terminate()
            except AgentFailed as exc:
                problems.append(str(exc))
        self._disconnect()
        for proc in self.recorded_infra():
            if is_alive(proc):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                if not wait_until(functools.partial(_is_gone, proc), timeout_s=5.0):
                    problems.append(f"infra process {proc.pid} survived SIGKILL")
        for pid in self.conmons():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mount_point in sorted(mounts_under(self.base_dir), key=len, reverse=True):
            result = subprocess.run(
                ["umount", "-l", mount_point], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                problems.append(f"umount -l {mount_point}: {result.stderr.strip()}")
        for parent in self.cgroup_dirs():
            problems += _remove_cgroup_tree(parent)
        try:
            PodRules(self.chain_prefix, self.bridge).remove_all()
        except NetworkError as exc:
            problems.append(f"removing iptables chains {self.chain_prefix}-*: {exc}")
        for veth in pod_veths_on(self.bridge):
            delete_link(veth)
        delete_link(self.bridge)
        result = subprocess.run(
            ["rm", "-rf", "--one-file-system", str(self.base_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            problems.append(f"rm -rf {self.base_dir}: {result.stderr.strip()}")
        return problems


class AgentFactory:
    """Makes agents, each on fresh dirs; every one is cleaned up when the test ends."""

    def __init__(self) -> None:
        self.agents: list[Agent] = []

    def __call__(
        self, *, start: bool = True, extra_runtime_config: str = "", extra_images_config: str = ""
    ) -> Agent:
        """extra_*_config: TOML lines appended to the [runtime] or [images] table."""
        agent = Agent(
            extra_runtime_config=extra_runtime_config, extra_images_config=extra_images_config
        )
        self.agents.append(agent)
        if start:
            agent.start()
        return agent

    def cleanup(self) -> list[str]:
        problems: list[str] = []
        for agent in reversed(self.agents):
            print(f"--- log of the agent in {agent.base_dir} (tail) ---")
            print(agent.log_tail(80))
            problems += agent.cleanup()
        return problems


def _is_gone(proc: ProcessId) -> bool:
    return not is_alive(proc)


def _socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _remove_cgroup_tree(top: Path, timeout_s: float = 5.0) -> list[str]:
    """Kill what still runs under the agent's cgroup parent (only this test's agent put
    processes there), then remove the tree, leaves first."""
    for procs in top.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    problems = []
    deadline = time.monotonic() + timeout_s
    for dirpath, _, _ in os.walk(top, topdown=False):
        directory = Path(dirpath)
        error = remove_cgroup_dir(directory, max(deadline - time.monotonic(), 0.0))
        if error is not None:
            problems.append(f"rmdir {directory}: {error.strerror}")
    return problems
