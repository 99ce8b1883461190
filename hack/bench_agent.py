"""The agent the benchmarks run against, and the timing table they fill: shared by
hack/bench.py and the bench_* modules it runs, which cannot import it back."""

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from network.bridge import delete_link
from network.iptables import PodRules
from tests.netutil import free_port

REPO = Path(__file__).resolve().parent.parent
METRICS_PORT = free_port()


@contextlib.contextmanager
def own_agent(
    launcher: Sequence[str | Path] = (),
    env: Mapping[str, str] | None = None,
    log_level: str = "warning",
) -> Iterator[tuple[Path, int]]:
    """launcher: what runs `moorage` (its argv before the subcommand), the installed entry
    point by default; env: added to the agent's environment."""
    base = Path(tempfile.mkdtemp(prefix="mbench-", dir="/tmp"))
    # As a node's /run: a user-namespaced pod's root must reach its rootfs below.
    base.chmod(0o711)
    token = uuid.uuid4().hex[:6]
    parent = f"/moorage-bench-{token}"
    bridge, prefix = f"mbench{token}", f"MBENCH{token.upper()}"
    config = base / "moorage.toml"
    config.write_text(
        f'[network]\nbridge = "{bridge}"\nchain_prefix = "{prefix}"\npod_cidr = "10.254.0.0/16"\n'
        f'[runtime]\ndefault_cgroup_parent = "{parent}"\n'
        f'[images]\nregistries_conf = "{base}/registries.conf"\n'
        f'[metrics]\naddress = "127.0.0.1:{METRICS_PORT}"\n'
    )
    socket = base / "cri.sock"
    log = (base / "agent.log").open("w")
    proc = subprocess.Popen(
        [
            *(launcher or [REPO / ".venv/bin/moorage"]),
            "serve",
            "--config",
            config,
            "--socket",
            socket,
            "--root",
            base / "root",
            "--run-dir",
            base / "run",
            "--log-level",
            log_level,
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_for_socket(socket, proc)
        yield socket, proc.pid
    finally:
        stop_agent(proc)
        log.close()
        PodRules(prefix, bridge).remove_all()
        delete_link(bridge)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (hierarchy / parent.strip("/")).rmdir()
        shutil.rmtree(base, ignore_errors=True)


def stop_agent(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a node's service manager stops it; SIGKILL if it does not exit in 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_socket(socket: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"agent exited with {proc.returncode}")
        if socket.exists():
            channel = grpc.insecure_channel(f"unix://{socket}")
            stub = api_pb2_grpc.RuntimeServiceStub(channel)
            with contextlib.suppress(grpc.RpcError):
                stub.Version(pb.VersionRequest(), timeout=1)
                return
        time.sleep(0.05)
    sys.exit("agent did not answer within 30 s")


def sandbox_config(pid_mode: pb.NamespaceMode.ValueType) -> Any:
    uid = uuid.uuid4().hex
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"bench-{uid[:8]}", uid=uid, namespace="bench"),
        hostname="bench",
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["bench.svc.cluster.local"]),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pid_mode)
            )
        ),
    )


class Timings:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def time(self, label: str, rpc: Callable[[Any], Any], request: Any) -> Any:
        started = time.perf_counter()
        result = rpc(request)
        self.samples.setdefault(label, []).append((time.perf_counter() - started) * 1000)
        return result

    def record(self, label: str, started: float) -> None:
        self.samples.setdefault(label, []).append((time.perf_counter() - started) * 1000)

    def report(self) -> str:
        lines = [f"{'call':<48} {'n':>5} {'median ms':>10} {'p95 ms':>8}"]
        for label, samples in self.samples.items():
            values = sorted(samples)
            p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
            median = statistics.median(values)
            lines.append(f"{label:<48} {len(values):>5} {median:>10.2f} {p95:>8.2f}")
        return "\n".join(lines)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
