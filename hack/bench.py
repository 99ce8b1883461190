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
import statistics
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from cri.logging import configure_logging
from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_agent import METRICS_PORT, Timings, own_agent, rss_mb, sandbox_config
from hack.bench_containers import bench_containers
from hack.bench_host import bench_cgroup_reads, bench_conmon
from hack.bench_load import bench_load
from hack.bench_reads import bench_reads
from hack.bench_restart import bench_restart
from hack.bench_streaming import bench_streaming
from network.bridge import delete_link
from network.bridge_network import BridgeNetwork, BridgeSettings
from network.cni import CniNetwork, CniSettings
from network.netns import bring_up_loopback
from network.types import HostPort, PodNetworkRequest
from runtime.host.namespaces import pin_current, unpin, unshared
from runtime.state.db import StateDB
from tests.cni_plugins import remove_plugin_rules, rule_marker, standard_plugins
from tests.images_build import build_all
from tests.registry_fixture import push, start_registry
from tests.registry_push import add_file, push_image, tar_of


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
        notes = bench_reads(socket, timings)
        bench_sandboxes(stub, args.n, timings)
        bench_bridge(args.n, timings)
        bench_cni(args.n, timings)
        notes += bench_conmon(args.n, timings)
        notes += bench_cgroup_reads(args.n, timings)
        notes += bench_images(socket, timings)
        notes += bench_containers(
            socket, args.n, timings, agent_pid, str(socket.parent), METRICS_PORT
        )
        notes += bench_streaming(socket, args.n, timings)
        notes += bench_load(socket, args.n, timings, agent_pid)
        if agent_pid:
            notes.append(
                f"agent RSS: idle {idle_rss:.1f} MB, after the run {rss_mb(agent_pid):.1f} MB"
            )
    if not args.socket:
        notes += bench_restart(timings)
    print(f"machine: {os.cpu_count()} cores")
    print(timings.report())
    print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
