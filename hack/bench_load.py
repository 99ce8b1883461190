"""Figures under a kubelet-like load for hack/bench: CreateContainer in 5 pods at once,
ExecSync probes at 10 per second, and the density start of 100 pods 5 at a time with the
agent's memory once they all run."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import grpc

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_containers import _container, _pod_config, _rss_kb, pulled_test_image

CONCURRENT_PODS = 5
PROBED_CONTAINERS = 10
PROBES_PER_S = 10
PROBE_SECONDS = 10
DENSITY_PODS = 100


class Timings(Protocol):
    def time(self, label: str, rpc: Callable[[Any], Any], request: Any) -> Any: ...

    def record(self, label: str, started: float) -> None: ...


def bench_load(socket: Path, n: int, timings: Timings, agent_pid: int) -> list[str]:
    channel = grpc.insecure_channel(f"unix://{socket}")
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    images = api_pb2_grpc.ImageServiceStub(channel)
    notes = []
    with pulled_test_image(images) as image:
        with _pods(runtime, CONCURRENT_PODS) as pods:
            _concurrent_creates(runtime, image, pods, n, timings)
        with _pods(runtime, PROBED_CONTAINERS) as pods:
            notes.append(_probes(runtime, image, pods, timings))
        notes += _density(runtime, image, timings, agent_pid)
    return notes


@contextlib.contextmanager
def _pods(runtime: Any, count: int) -> Iterator[list[tuple[str, Any]]]:
    made: list[tuple[str, Any]] = []
    try:
        for _ in range(count):
            config = _pod_config()
            made.append(
                (
                    runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id,
                    config,
                )
            )
        yield made
    finally:
        _remove_pods(runtime, [pod_id for pod_id, _ in made])


def _remove_pods(runtime: Any, pod_ids: list[str]) -> None:
    for pod_id in pod_ids:
        runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def _concurrent_creates(
    runtime: Any, image: str, pods: list[tuple[str, Any]], n: int, timings: Timings
) -> None:
    """Each round, one CreateContainer per pod, all sent at once (a barrier lines them up)."""
    barrier = threading.Barrier(len(pods))

    def create(pod: tuple[str, Any]) -> str:
        pod_id, config = pod
        request = pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=_container(image, ["sleep", "60"]), sandbox_config=config
        )
        barrier.wait()
        response = timings.time(
            f"CreateContainer, {len(pods)} pods at once", runtime.CreateContainer, request
        )
        return str(response.container_id)

    with ThreadPoolExecutor(len(pods)) as pool:
        for _ in range(n):
            for container_id in pool.map(create, pods):
                runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=container_id))


def _probes(runtime: Any, image: str, pods: list[tuple[str, Any]], timings: Timings) -> str:
    """ExecSync `true` spread over the running containers at PROBES_PER_S, as exec probes."""
    containers = []
    for pod_id, config in pods:
        created = runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=pod_id,
                config=_container(image, ["sleep", "600"]),
                sandbox_config=config,
            )
        )
        runtime.StartContainer(pb.StartContainerRequest(container_id=created.container_id))
        containers.append(created.container_id)
    label = f"ExecSync under {PROBES_PER_S} probes/s"
    durations: list[float] = []

    def probe(container_id: str) -> None:
        started = time.perf_counter()
        runtime.ExecSync(pb.ExecSyncRequest(container_id=container_id, cmd=["true"], timeout=5))
        timings.record(label, started)
        durations.append((time.perf_counter() - started) * 1000)

    count = PROBES_PER_S * PROBE_SECONDS
    with ThreadPoolExecutor(PROBES_PER_S) as pool:
        begun = time.perf_counter()
        futures = []
        for i in range(count):
            # Paced on a schedule, not after each answer: a slow probe does not slow the rest.
            delay = begun + i / PROBES_PER_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(probe, containers[i % len(containers)]))
        for future in futures:
            future.result()
    ordered = sorted(durations)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"ExecSync under {PROBES_PER_S} probes/s over {len(containers)} containers, "
        f"{count} probes: p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"
    )


def _density(runtime: Any, image: str, timings: Timings, agent_pid: int) -> list[str]:
    """DENSITY_PODS pods of one container each, started CONCURRENT_PODS at a time."""
    pod_ids: list[str] = []
    lock = threading.Lock()

    def start_pod(_: int) -> None:
        started = time.perf_counter()
        config = _pod_config()
        pod_id = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
        with lock:
            pod_ids.append(pod_id)
        created = runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=pod_id,
                config=_container(image, ["sleep", "600"]),
                sandbox_config=config,
            )
        )
        runtime.StartContainer(pb.StartContainerRequest(container_id=created.container_id))
        timings.record(f"pod start (run + create + start), {CONCURRENT_PODS} at a time", started)

    try:
        begun = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT_PODS) as pool:
            list(pool.map(start_pod, range(DENSITY_PODS)))
        seconds = time.perf_counter() - begun
        running = runtime.ListContainers(
            pb.ListContainersRequest(
                filter=pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
            )
        ).containers
        rss = _rss_kb(agent_pid) / 1024
        return [
            f"density: {DENSITY_PODS} pods of one container, {CONCURRENT_PODS} at a time, in "
            f"{seconds:.1f} s ({DENSITY_PODS / seconds:.1f} pods/s); {len(running)} running",
            f"agent RSS with {DENSITY_PODS} running pods: {rss:.1f} MB",
        ]
    finally:
        _remove_pods(runtime, pod_ids)
