"""Time CRI calls against a real agent and print median and p95 per RPC, with the host figures
below the agent (conmon create+start, v1 cgroup reads) alongside.

Without --socket it starts its own agent on a temporary socket/root/run-dir and a cgroup parent
of its own, and removes all of it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from cri.logging import configure_logging
from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_containers import bench_containers
from hack.bench_host import bench_cgroup_reads, bench_conmon
from hack.bench_streaming import bench_streaming
from network.bridge import delete_link
from network.bridge_network import BridgeNetwork, BridgeSettings
from network.cni import CniNetwork, CniSettings
from network.iptables import PodRules
from network.netns import bring_up_loopback
from network.types import HostPort, PodNetworkRequest
from runtime.host.namespaces import pin_current, unpin, unshared
from runtime.state.db import StateDB
from tests.cni_plugins import remove_plugin_rules, rule_marker, standard_plugins
from tests.images_build import build_all
from tests.netutil import free_port
from tests.registry_fixture import push, start_registry
from tests.registry_push import add_file, push_image, tar_of

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
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        PodRules(prefix, bridge).remove_all()
        delete_link(bridge)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (hierarchy / parent.strip("/")).rmdir()
        shutil.rmtree(base, ignore_errors=True)


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


def bench_sandboxes(stub: Any, n: int, timings: Timings) -> None:
    for pid_mode, label in ((pb.CONTAINER, "pid CONTAINER"), (pb.POD, "pid POD, catatonit")):
        for _ in range(n):
            request = pb.RunPodSandboxRequest(config=sandbox_config(pid_mode))
            sid = timings.time(
                f"RunPodSandbox ({label})", stub.RunPodSandbox, request
            ).pod_sandbox_id
            status = pb.PodSandboxStatusRequest(pod_sandbox_id=sid)
            for _ in range(5):
                timings.time("PodSandboxStatus", stub.PodSandboxStatus, status)
            timings.time("ListPodSandbox (1 pod)", stub.ListPodSandbox, pb.ListPodSandboxRequest())
            stop = pb.StopPodSandboxRequest(pod_sandbox_id=sid)
            timings.time(f"StopPodSandbox ({label})", stub.StopPodSandbox, stop)
            remove = pb.RemovePodSandboxRequest(pod_sandbox_id=sid)
            timings.time("RemovePodSandbox", stub.RemovePodSandbox, remove)


@contextlib.contextmanager
def pod_netns(count: int) -> Iterator[list[Path]]:
    """Pinned network namespaces standing in for pods, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="mbench-ns-", dir="/tmp"))
    pins = [base / f"pod{i}" for i in range(count)]

    def make() -> None:
        for pin in pins:
            with unshared(["net"]):
                bring_up_loopback()
                pin_current("net", pin)

    worker = threading.Thread(target=make)
    worker.start()
    worker.join()
    try:
        yield pins
    finally:
        for pin in pins:
            unpin(pin)
        shutil.rmtree(base, ignore_errors=True)


async def time_network(network: Any, pins: list[Path], label: str, timings: Timings) -> None:
    requests = [
        PodNetworkRequest(
            uuid.uuid4().hex * 2,
            f"bench-{i}",
            "bench",
            uuid.uuid4().hex,
            str(pin),
            [HostPort("tcp", 80, 30000 + i)] if i % 2 else [],
        )
        for i, pin in enumerate(pins)
    ]
    for request in requests:
        started = time.perf_counter()
        await network.attach(request)
        timings.record(f"{label} set-up", started)
    for request in requests:
        started = time.perf_counter()
        await network.detach(request)
        timings.record(f"{label} tear-down", started)


def bench_bridge(n: int, timings: Timings) -> None:
    token = uuid.uuid4().hex[:6]
    settings = BridgeSettings(bridge=f"mbench{token}", chain_prefix=f"MBENCH{token.upper()}")
    with tempfile.TemporaryDirectory() as state, pod_netns(n) as pins:
        network = BridgeNetwork(settings, "10.253.0.0/16", StateDB(Path(state) / "state.db"))
        try:
            asyncio.run(
                time_network(network, pins, "bridge network (half with a hostPort)", timings)
            )
        finally:
            network.rules.remove_all()
            delete_link(settings.bridge)


def bench_cni(n: int, timings: Timings) -> None:
    """The plugin chain containerd's default conflist runs: bridge, host-local, portmap."""
    token = uuid.uuid4().hex[:6]
    name, bridge = f"mbench{token}", f"mcbench{token}"
    with tempfile.TemporaryDirectory() as base, pod_netns(n) as pins:
        conf_dir = Path(base) / "net.d"
        conf_dir.mkdir()
        plugins = standard_plugins(bridge, "10.252.0.0/16", f"{base}/ipam")
        (conf_dir / "10-bench.conflist").write_text(
            json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": plugins})
        )
        network = CniNetwork(
            CniSettings(
                conf_dir=conf_dir, bin_dirs=(Path("/usr/lib/cni"),), cache_dir=Path(base) / "cache"
            )
        )
        try:
            asyncio.run(time_network(network, pins, "CNI bridge+host-local+portmap", timings))
        finally:
            delete_link(bridge)
            remove_plugin_rules(rule_marker(name))


def _random_file(archive: tarfile.TarFile, name: str) -> None:
    add_file(archive, name, os.urandom(64))


def bench_images(socket: Path, timings: Timings) -> list[str]:
    """Cold pull + unpack of a ~100 MB image, then lookups with 50 images in the store."""
    channel = grpc.insecure_channel(f"unix://{socket}")
    images = api_pb2_grpc.ImageServiceStub(channel)
    registry = start_registry()
    notes = []
    try:
        with tempfile.TemporaryDirectory() as layouts:
            built = build_all(Path(layouts), large_bytes=100 * 1024 * 1024, large_layers=5)
            push(registry, built["large"], "bench/large")
        name = f"{registry.address}/bench/large:latest"
        spec = pb.ImageSpec(image=name)
        durations = []
        # Removal collects the blobs and layers too, so every pull is cold.
        for attempt in range(5):
            if attempt:
                images.RemoveImage(pb.RemoveImageRequest(image=spec))
            started = time.perf_counter()
            images.PullImage(pb.PullImageRequest(image=spec))
            durations.append(time.perf_counter() - started)
        megabytes = images.ImageStatus(pb.ImageStatusRequest(image=spec)).image.size / 1e6
        seconds = statistics.median(durations)
        notes.append(
            f"cold pull + unpack of {megabytes:.0f} MB in 6 layers, median of 5: {seconds:.2f} s, "
            f"{megabytes / seconds:.0f} MB/s (best {megabytes / min(durations):.0f} MB/s)"
        )
        for i in range(49):
            layer = tar_of(functools.partial(_random_file, name=f"file-{i}"))
            push_image(registry.address, f"bench/small-{i}", "latest", [layer])
            small = f"{registry.address}/bench/small-{i}:latest"
            images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=small)))
        listing = pb.ListImagesRequest()
        assert len(images.ListImages(listing).images) == 50
        for _ in range(200):
            timings.time("ListImages (50 images)", images.ListImages, listing)
        lookup = pb.ImageStatusRequest(image=pb.ImageSpec(image=name))
        for _ in range(500):
            timings.time("ImageStatus (50 images)", images.ImageStatus, lookup)
    finally:
        registry.stop()
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50, help="iterations per case (default 50)")
    parser.add_argument("--socket", type=Path, help="use a running agent instead of starting one")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("hack/bench needs root (it runs pods)")
    configure_logging("warning")

    with contextlib.ExitStack() as stack:
        if args.socket:
            socket, agent_pid = args.socket, 0
        else:
            socket, agent_pid = stack.enter_context(own_agent())
        channel = grpc.insecure_channel(f"unix://{socket}")
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        timings = Timings()
        for _ in range(20):
            timings.time("Version", stub.Version, pb.VersionRequest())
        idle_rss = rss_mb(agent_pid) if agent_pid else 0.0
        bench_sandboxes(stub, args.n, timings)
        bench_bridge(args.n, timings)
        bench_cni(args.n, timings)
        notes = bench_conmon(args.n, timings)
        notes += bench_cgroup_reads(args.n, timings)
        notes += bench_images(socket, timings)
        notes += bench_containers(
            socket, args.n, timings, agent_pid, str(socket.parent), METRICS_PORT
        )
        notes += bench_streaming(socket, args.n, timings)
        print(timings.report())
        print("\n" + "\n".join(notes))
        if agent_pid:
            print(f"\nagent RSS: idle {idle_rss:.1f} MB, after the run {rss_mb(agent_pid):.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
