"""Start-up figures for hack/bench: the agent's idle RSS, RSS by module group, and how long a
restart after kill -9 takes to serve again with running pods (containers live on under conmon).

The kill -9 figure is timed from the restart's exec to the first ListContainers that shows
every container RUNNING, a Version having answered before it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_agent import REPO, Timings, own_agent, rss_mb, sandbox_config, stop_agent
from hack.bench_containers import pulled_test_image
from network.bridge import delete_link
from network.iptables import PodRules
from tests.netutil import free_port

PODS = 10
RESTARTS = 7
# (label, modules): imported in this order in a fresh interpreter, each group's RSS growth.
MODULE_GROUPS = (
    ("asyncio + stdlib", ("asyncio", "sqlite3", "json", "tomllib", "ctypes")),
    ("grpc", ("grpc", "grpc.aio")),
    ("protobuf + generated CRI", ("cri.proto.api_pb2", "cri.proto.api_pb2_grpc")),
    ("structlog", ("structlog",)),
    ("prometheus_client", ("prometheus_client",)),
    ("moorage (serve)", ("cri.cli",)),
    ("pyroute2 (bridge netlink)", ("pyroute2",)),
    ("streaming (h11, wsproto)", ("cri.streaming.sessions",)),
    ("image pulls (httpx, zstandard)", ("runtime.images.puller", "runtime.images.unpack", "httpx")),
    ("cni mode", ("network.cni",)),
)
_RSS_SCRIPT = """
import importlib, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
groups = [g.split(",") for g in sys.argv[1:]]
before = rss()
print(f"{before:.1f}")
for modules in groups:
    for module in modules:
        # Reading an attribute runs a module the agent imports lazily.
        importlib.import_module(module).__dict__
    now = rss()
    print(f"{now - before:.1f}")
    before = now
"""


def bench_restart(timings: Timings) -> list[str]:
    notes = [_idle_rss(), _rss_by_module()]
    with _agent_dirs() as dirs:
        proc = _start(dirs)
        try:
            _wait_serving(dirs, set(), proc)
            stub = api_pb2_grpc.RuntimeServiceStub(_channel(dirs))
            with pulled_test_image(api_pb2_grpc.ImageServiceStub(_channel(dirs))) as image:
                expected = _run_pods(stub, image)
            for _ in range(RESTARTS):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                started = time.perf_counter()
                proc = _start(dirs)
                _wait_serving(dirs, expected, proc)
                timings.record(f"kill -9 -> serving again ({PODS} pods running)", started)
            seconds = timings.samples[f"kill -9 -> serving again ({PODS} pods running)"]
            notes.append(
                f"kill -9 -> serving again with {PODS} running pods, median of {RESTARTS}: "
                f"{statistics.median(seconds) / 1000:.3f} s (Version, then ListContainers "
                "showing every container RUNNING)"
            )
            _remove_pods(stub)
        finally:
            stop_agent(proc)
    return notes


def _idle_rss() -> str:
    with own_agent() as (socket, pid):
        stub = api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel(f"unix://{socket}"))
        stub.Version(pb.VersionRequest())
        after_version = rss_mb(pid)
        # Status waits for the start-up work that runs after the socket is up.
        stub.Status(pb.StatusRequest())
        time.sleep(1)
        settled = rss_mb(pid)
    return (
        f"agent RSS idle: {after_version:.1f} MB after the first Version, "
        f"{settled:.1f} MB once start-up work is done"
    )


def _rss_by_module() -> str:
    groups = [",".join(modules) for _, modules in MODULE_GROUPS]
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, *groups],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    parts = [f"interpreter {float(out[0]):.1f}"]
    growth = zip(MODULE_GROUPS, out[1:], strict=True)
    parts += [f"{label} +{float(mb):.1f}" for (label, _), mb in growth]
    return "RSS by module group (MB, fresh interpreter, in this order): " + ", ".join(parts)


class _Dirs:
    def __init__(self, base: Path) -> None:
        token = uuid.uuid4().hex[:6]
        self.base = base
        self.socket = base / "cri.sock"
        self.config = base / "moorage.toml"
        self.bridge, self.chain_prefix = f"mrst{token}", f"MRST{token.upper()}"
        self.cgroup_parent = f"/moorage-restart-{token}"
        self.config.write_text(
            f'[network]\nbridge = "{self.bridge}"\nchain_prefix = "{self.chain_prefix}"\n'
            'pod_cidr = "10.253.0.0/16"\n'
            f'[runtime]\ndefault_cgroup_parent = "{self.cgroup_parent}"\n'
            f'[images]\nregistries_conf = "{base}/registries.conf"\n'
            f'[metrics]\naddress = "127.0.0.1:{free_port()}"\n'
        )


@contextlib.contextmanager
def _agent_dirs() -> Iterator[_Dirs]:
    base = Path(tempfile.mkdtemp(prefix="mrestart-", dir="/tmp"))
    base.chmod(0o711)
    dirs = _Dirs(base)
    try:
        yield dirs
    finally:
        # What an agent that failed half-way may have left running: conmons and their
        # containers, found by the run dir on their command lines.
        for pid in _processes_mentioning(str(base)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        PodRules(dirs.chain_prefix, dirs.bridge).remove_all()
        delete_link(dirs.bridge)
        _unmount_below(base)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            _remove_cgroup_tree(hierarchy / dirs.cgroup_parent.strip("/"))
        shutil.rmtree(base, ignore_errors=True)


def _start(dirs: _Dirs) -> subprocess.Popen[bytes]:
    log = (dirs.base / "agent.log").open("a")
    with log:
        return subprocess.Popen(
            [
                REPO / ".venv/bin/moorage",
                "serve",
                "--config",
                dirs.config,
                "--socket",
                dirs.socket,
                "--root",
                dirs.base / "root",
                "--run-dir",
                dirs.base / "run",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
        )


def _channel(dirs: _Dirs) -> grpc.Channel:
    return grpc.insecure_channel(f"unix://{dirs.socket}")


def _run_pods(stub: Any, image: str) -> set[str]:
    containers = set()
    for _ in range(PODS):
        config = sandbox_config(pb.CONTAINER)
        pod_id = stub.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
        container = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="sleeper"),
            image=pb.ImageSpec(image=image),
            command=["sleep", "3600"],
        )
        create = pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=container, sandbox_config=config
        )
        container_id = stub.CreateContainer(create).container_id
        stub.StartContainer(pb.StartContainerRequest(container_id=container_id))
        containers.add(container_id)
    return containers


def _wait_serving(dirs: _Dirs, expected: set[str], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    # A new channel each round: one that saw the socket missing backs off for a second.
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        with contextlib.suppress(grpc.RpcError), _channel(dirs) as channel:
            stub = api_pb2_grpc.RuntimeServiceStub(channel)
            stub.Version(pb.VersionRequest(), timeout=1)
            listed = stub.ListContainers(pb.ListContainersRequest(), timeout=5).containers
            if {c.id for c in listed if c.state == pb.CONTAINER_RUNNING} == expected:
                return
        time.sleep(0.005)
    raise RuntimeError("the restarted agent did not list every container within 30 s")


def _remove_pods(stub: Any) -> None:
    for pod in stub.ListPodSandbox(pb.ListPodSandboxRequest()).items:
        stub.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
        stub.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _unmount_below(base: Path) -> None:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{base}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _remove_cgroup_tree(root: Path) -> None:
    if not root.is_dir():
        return
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


if __name__ == "__main__":
    timings = Timings()
    for note in bench_restart(timings):
        print(note)
    print(timings.report())
