"""Read-path figures for hack/bench (issue 19): the calls kubelet polls every second, with 10
pods of one running container each, against Version, the floor of a round trip.

The server-side figures are the agent's own: the mean of its per-RPC latency histogram over the
samples taken here, read from /metrics before and after (the interceptor's time, without the
gRPC framing and (de)serialisation around it).
"""

from __future__ import annotations

import contextlib
import functools
import re
import statistics
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_containers import Timings, _container, _pod_config, pulled_test_image
from tests.registry_fixture import start_registry
from tests.registry_push import add_file, push_image, tar_of

PODS = 10
SAMPLES = 200
# The test image plus these: "a few", as on a node that runs one workload.
EXTRA_IMAGES = 2
_SERIES = re.compile(
    r'^moorage_cri_request_duration_seconds_(sum|count)\{method="(\w+)"\} (\S+)$', re.MULTILINE
)


def bench_reads(socket: Path, timings: Timings, metrics_url: str | None = None) -> list[str]:
    """metrics_url: the agent's /metrics, by default the one its moorage.toml next to the
    socket names (as own_agent writes it); without either, no server-side figures."""
    channel = grpc.insecure_channel(f"unix://{socket}")
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    images = api_pb2_grpc.ImageServiceStub(channel)
    url = metrics_url or _metrics_url_beside(socket)
    try:
        with pulled_test_image(images) as image, _extra_images(images) as extra:
            try:
                with _pods(runtime, image) as (pod_id, container_id):
                    before = _server_times(url)
                    floor_ms = _time_reads(runtime, images, timings, pod_id, container_id, extra[0])
                    after = _server_times(url)
            finally:
                _remove_image(images, image)
    finally:
        channel.close()
    notes = [f"Version, the floor of a CRI round trip: median {floor_ms:.3f} ms"]
    if before and after:
        notes.append(_server_note(before, after))
    return notes


def _time_reads(  # noqa: PLR0917
    runtime: Any, images: Any, timings: Timings, pod_id: str, container_id: str, image: str
) -> float:
    """Times the calls; the median of Version in ms."""
    pods, containers = pb.ListPodSandboxRequest(), pb.ListContainersRequest()
    assert len(runtime.ListPodSandbox(pods).items) == PODS
    assert len(runtime.ListContainers(containers).containers) == PODS
    listing = pb.ListImagesRequest()
    listed = len(images.ListImages(listing).images)
    version = pb.VersionRequest()
    floor_ms: list[float] = []
    cases: list[tuple[str, Callable[[Any], Any], Any]] = [
        (
            "PodSandboxStatus",
            runtime.PodSandboxStatus,
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id),
        ),
        (
            "ContainerStatus",
            runtime.ContainerStatus,
            pb.ContainerStatusRequest(container_id=container_id),
        ),
        (f"ListImages ({listed} images)", images.ListImages, listing),
        (
            "ImageStatus",
            images.ImageStatus,
            pb.ImageStatusRequest(image=pb.ImageSpec(image=image)),
        ),
        ("Status", runtime.Status, pb.StatusRequest()),
        ("ImageFsInfo", images.ImageFsInfo, pb.ImageFsInfoRequest()),
    ]
    for _ in range(SAMPLES):
        begun = time.perf_counter()
        runtime.ListPodSandbox(pods)
        runtime.ListContainers(containers)
        timings.record(f"relist (ListPodSandbox + ListContainers, {PODS} pods)", begun)
        begun = time.perf_counter()
        runtime.Version(version)
        floor_ms.append((time.perf_counter() - begun) * 1000)
        timings.record("Version", begun)
        for label, rpc, request in cases:
            timings.time(label, rpc, request)
    return statistics.median(floor_ms)


@contextlib.contextmanager
def _extra_images(images: Any) -> Iterator[list[str]]:
    registry = start_registry()
    names: list[str] = []
    try:
        for i in range(EXTRA_IMAGES):
            layer = tar_of(functools.partial(add_file, name=f"reads-{i}", data=b"%d" % i))
            push_image(registry.address, f"bench/reads-{i}", "latest", [layer])
            name = f"{registry.address}/bench/reads-{i}:latest"
            images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=name)))
            names.append(name)
        yield names
    finally:
        for name in names:
            _remove_image(images, name)
        registry.stop()


def _remove_image(images: Any, name: str) -> None:
    with contextlib.suppress(grpc.RpcError):
        images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=name)))


@contextlib.contextmanager
def _pods(runtime: Any, image: str) -> Iterator[tuple[str, str]]:
    """PODS pods of one running container each; (a pod, its container)."""
    pod_ids: list[str] = []
    container_ids: list[str] = []
    try:
        for _ in range(PODS):
            config = _pod_config()
            pod_id = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
            pod_ids.append(pod_id)
            container_id = runtime.CreateContainer(
                pb.CreateContainerRequest(
                    pod_sandbox_id=pod_id,
                    config=_container(image, ["sleep", "3600"]),
                    sandbox_config=config,
                )
            ).container_id
            container_ids.append(container_id)
            runtime.StartContainer(pb.StartContainerRequest(container_id=container_id))
        yield pod_ids[0], container_ids[0]
    finally:
        # Removing a pod stops and removes its containers too.
        for pod_id in pod_ids:
            with contextlib.suppress(grpc.RpcError):
                runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            with contextlib.suppress(grpc.RpcError):
                runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def _metrics_url_beside(socket: Path) -> str | None:
    try:
        config = tomllib.loads((socket.parent / "moorage.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    address = config.get("metrics", {}).get("address")
    return f"http://{address}/metrics" if address else None


def _server_times(url: str | None) -> dict[str, tuple[float, float]]:
    """method -> (sum of seconds, count) of the agent's latency histogram."""
    if url is None:
        return {}
    try:
        text = httpx.get(url, timeout=10).raise_for_status().text
    except httpx.HTTPError:
        return {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for kind, method, value in _SERIES.findall(text):
        (sums if kind == "sum" else counts)[method] = float(value)
    return {m: (sums[m], counts[m]) for m in sums if m in counts}


def _server_note(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> str:
    parts = []
    for method, (total_s, count) in sorted(after.items()):
        old_s, old_count = before.get(method, (0.0, 0.0))
        if count - old_count >= SAMPLES:
            mean_ms = (total_s - old_s) / (count - old_count) * 1000
            parts.append(f"{method} {mean_ms:.3f}")
    return "server-side mean ms per call (the agent's histogram): " + ", ".join(parts)
