"""Container figures for hack/bench: the lifecycle RPCs, ExecSync, ListContainers with 100
containers, the first start of a one-container pod, and memory with 100 containers running."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import grpc
import httpx

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_contract import bench_contract
from tests.images_build import build_all
from tests.registry_fixture import push, start_registry

CONTAINERS_FOR_LIST = 100
# ListContainers against StreamContainers: the kubelet streams once a node is this big.
CONTAINERS_FOR_STREAM = 300


def _pod_config() -> Any:
    uid = uuid.uuid4().hex
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"bench-{uid[:8]}", uid=uid, namespace="bench"),
        hostname="bench",
    )


def _container(image: str, command: list[str]) -> Any:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=f"c-{uuid.uuid4().hex[:8]}"),
        image=pb.ImageSpec(image=image),
        command=command,
    )


def _rss_kb(pid: int) -> int:
    if not pid:
        return 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _conmon_pids(marker: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"conmon.*{marker}"], capture_output=True, text=True, check=False
    )
    return [int(p) for p in found.stdout.split()]


class Timings(Protocol):
    def time(self, label: str, rpc: Callable[[Any], Any], request: Any) -> Any: ...

    def record(self, label: str, started: float) -> None: ...


def _timed_create_start(  # noqa: PLR0917
    runtime: Any, timings: Timings, case: str, pod_id: str, pod_config: Any, config: Any
) -> str:
    """Create and start config in the pod, timed as "create + start (case)"; its id."""
    create = pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config
    )
    begun = time.perf_counter()
    cid = str(runtime.CreateContainer(create).container_id)
    runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    timings.record(f"create + start ({case})", begun)
    return cid


@contextlib.contextmanager
def pulled_test_image(images: Any) -> Iterator[str]:
    """The tests' static busybox image, pulled from a local registry that lives as long."""
    registry = start_registry()
    try:
        with tempfile.TemporaryDirectory() as layouts:
            built = build_all(Path(layouts), large_bytes=1 << 20, large_layers=1)
            push(registry, built["single"], "bench/single")
        image = f"{registry.address}/bench/single:latest"
        images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))
        yield image
    finally:
        registry.stop()


def bench_containers(  # noqa: PLR0917
    socket: Path, n: int, timings: Timings, agent_pid: int, marker: str, metrics_port: int
) -> list[str]:
    """marker is in every conmon's argv (the agent's root dir)."""
    record = timings.time
    channel = grpc.insecure_channel(f"unix://{socket}")
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    images = api_pb2_grpc.ImageServiceStub(channel)
    notes = []
    with pulled_test_image(images) as image:
        started = time.perf_counter()
        pod_config = _pod_config()
        first_pod = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config)).pod_sandbox_id
        first = runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=first_pod,
                config=_container(image, ["sleep", "3600"]),
                sandbox_config=pod_config,
            )
        ).container_id
        runtime.StartContainer(pb.StartContainerRequest(container_id=first))
        notes.append(
            "first start of a pod with one container (RunPodSandbox + Create + Start): "
            f"{(time.perf_counter() - started) * 1000:.1f} ms"
        )

        for _ in range(n):
            create = pb.CreateContainerRequest(
                pod_sandbox_id=first_pod,
                config=_container(image, ["sleep", "3600"]),
                sandbox_config=pod_config,
            )
            begun = time.perf_counter()
            cid = record("CreateContainer", runtime.CreateContainer, create).container_id
            record(
                "StartContainer", runtime.StartContainer, pb.StartContainerRequest(container_id=cid)
            )
            timings.record("create + start", begun)
            for _ in range(5):
                record(
                    "ContainerStatus",
                    runtime.ContainerStatus,
                    pb.ContainerStatusRequest(container_id=cid),
                )
            record(
                "ExecSync (true)",
                runtime.ExecSync,
                pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10),
            )
            record(
                "StopContainer (timeout 0)",
                runtime.StopContainer,
                pb.StopContainerRequest(container_id=cid, timeout=0),
            )
            record(
                "RemoveContainer",
                runtime.RemoveContainer,
                pb.RemoveContainerRequest(container_id=cid),
            )

        # A full restricted security context against the default one (issue: within 5 ms).
        restricted = pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                run_as_user=pb.Int64Value(value=1000),
                capabilities=pb.Capability(drop_capabilities=["ALL"]),
                readonly_rootfs=True,
                no_new_privs=True,
                seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
            )
        )
        for _ in range(n):
            config = _container(image, ["sleep", "3600"])
            config.linux.CopyFrom(restricted)
            cid = _timed_create_start(
                runtime, timings, "restricted security context", first_pod, pod_config, config
            )
            runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))

        # The same with runc, the other handler, for the comparison in the README.
        runc_config = _pod_config()
        runc_pod = runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=runc_config, runtime_handler="runc")
        ).pod_sandbox_id
        for _ in range(n):
            config = _container(image, ["sleep", "3600"])
            cid = _timed_create_start(
                runtime, timings, "runc handler", runc_pod, runc_config, config
            )
            runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
        runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=runc_pod))

        # A pod with a user namespace of its own: the helper process and idmapped layers.
        mapping = pb.IDMapping(host_id=1_000_000_000, container_id=0, length=65536)
        for _ in range(n):
            userns_config = _pod_config()
            userns_config.linux.security_context.namespace_options.userns_options.CopyFrom(
                pb.UserNamespace(mode=pb.POD, uids=[mapping], gids=[mapping])
            )
            begun = time.perf_counter()
            userns_pod = runtime.RunPodSandbox(
                pb.RunPodSandboxRequest(config=userns_config)
            ).pod_sandbox_id
            timings.record("RunPodSandbox (user namespace)", begun)
            config = _container(image, ["sleep", "3600"])
            config.linux.security_context.namespace_options.CopyFrom(
                userns_config.linux.security_context.namespace_options
            )
            _timed_create_start(
                runtime, timings, "user namespace", userns_pod, userns_config, config
            )
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=userns_pod))
            runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=userns_pod))

        bench_contract(runtime, image, timings)

        idle_kb = _rss_kb(agent_pid)
        ids = [first]
        for _ in range(CONTAINERS_FOR_LIST - 1):
            cid = runtime.CreateContainer(
                pb.CreateContainerRequest(
                    pod_sandbox_id=first_pod,
                    config=_container(image, ["sleep", "3600"]),
                    sandbox_config=pod_config,
                )
            ).container_id
            runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
            ids.append(cid)
        listing = pb.ListContainersRequest()
        assert len(runtime.ListContainers(listing).containers) == CONTAINERS_FOR_LIST
        for _ in range(200):
            record(
                f"ListContainers ({CONTAINERS_FOR_LIST} containers)",
                runtime.ListContainers,
                listing,
            )
        stats_request = pb.ListContainerStatsRequest()
        assert len(runtime.ListContainerStats(stats_request).stats) == CONTAINERS_FOR_LIST
        for _ in range(20):
            record(
                f"ListContainerStats ({CONTAINERS_FOR_LIST} containers)",
                runtime.ListContainerStats,
                stats_request,
            )
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with httpx.Client() as http:
            for _ in range(20):
                begun = time.perf_counter()
                http.get(url).raise_for_status()
                timings.record(f"Prometheus scrape ({CONTAINERS_FOR_LIST} containers)", begun)
        for _ in range(20):
            record(
                "ListMetricDescriptors",
                runtime.ListMetricDescriptors,
                pb.ListMetricDescriptorsRequest(),
            )
            record(
                f"ListPodSandboxMetrics ({CONTAINERS_FOR_LIST} containers)",
                runtime.ListPodSandboxMetrics,
                pb.ListPodSandboxMetricsRequest(),
            )
        conmons = _conmon_pids(marker)
        conmon_kb = [_rss_kb(pid) for pid in conmons]
        bench_list_forms(runtime, first_pod, pod_config, image, record)
        notes.append(
            f"agent RSS before the 100 containers {idle_kb / 1024:.1f} MB, with "
            f"{CONTAINERS_FOR_LIST} running {_rss_kb(agent_pid) / 1024:.1f} MB; "
            f"conmon RSS per container {sum(conmon_kb) / max(len(conmon_kb), 1) / 1024:.2f} MB "
            f"({len(conmons)} conmons)"
        )
        runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=first_pod))
        runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=first_pod))
    return notes


def bench_list_forms(
    runtime: Any, pod_id: str, pod_config: Any, image: str, record: Callable[..., Any]
) -> None:
    """Both list forms over CONTAINERS_FOR_STREAM containers (the 100 running plus created
    ones), the stream read to its end."""
    listing = pb.ListContainersRequest()
    present = len(runtime.ListContainers(listing).containers)
    for _ in range(CONTAINERS_FOR_STREAM - present):
        runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=pod_id,
                config=_container(image, ["sleep", "3600"]),
                sandbox_config=pod_config,
            )
        )
    streaming = pb.StreamContainersRequest()

    def stream_all(request: Any) -> int:
        return sum(len(page.containers) for page in runtime.StreamContainers(request))

    assert len(runtime.ListContainers(listing).containers) == CONTAINERS_FOR_STREAM
    assert stream_all(streaming) == CONTAINERS_FOR_STREAM
    for _ in range(100):
        record(
            f"ListContainers ({CONTAINERS_FOR_STREAM} containers)", runtime.ListContainers, listing
        )
        record(f"StreamContainers ({CONTAINERS_FOR_STREAM} containers)", stream_all, streaming)
