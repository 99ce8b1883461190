"""Streaming benchmarks: exec round trips over SPDY and WebSocket, port-forward throughput."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_containers import Timings, pulled_test_image
from tests.streaming.spdy_client import connect
from tests.streaming.ws_client import ChannelClient, WsClient

FORWARD_BYTES = 100 * 1024 * 1024
FORWARD_PORT = 8090


def bench_streaming(socket: Path, n: int, timings: Timings) -> list[str]:
    channel = grpc.insecure_channel(f"unix://{socket}")
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    images = api_pb2_grpc.ImageServiceStub(channel)
    with pulled_test_image(images) as image:
        uid = uuid.uuid4().hex
        pod_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"stream-{uid[:8]}", uid=uid, namespace="bench")
        )
        pod = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config)).pod_sandbox_id
        try:
            return asyncio.run(_bench(runtime, pod, pod_config, image, n, timings))
        finally:
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
            runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


async def _bench(  # noqa: PLR0917
    runtime: api_pb2_grpc.RuntimeServiceStub,
    pod: str,
    pod_config: pb.PodSandboxConfig,
    image: str,
    n: int,
    timings: Timings,
) -> list[str]:
    def run(command: list[str]) -> str:
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=f"c-{uuid.uuid4().hex[:8]}"),
            image=pb.ImageSpec(image=image),
            command=command,
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=config, sandbox_config=pod_config
        )
        container_id = str(runtime.CreateContainer(request).container_id)
        runtime.StartContainer(pb.StartContainerRequest(container_id=container_id))
        return container_id

    sleeper = run(["sleep", "3600"])
    exec_true = pb.ExecRequest(container_id=sleeper, cmd=["true"], stdout=True, stderr=True)
    for _ in range(n):
        begun = time.perf_counter()
        url = urlsplit(runtime.Exec(exec_true).url)
        client, _ = await connect(
            url.hostname or "", url.port or 0, url.path, ["v4.channel.k8s.io"]
        )
        streams = [
            await client.open_stream({"streamtype": kind}) for kind in ("error", "stdout", "stderr")
        ]
        for stream in streams:
            await stream.wait_reply()
        assert b"Success" in await streams[0].read_all()
        timings.record("exec true round trip (SPDY, RPC included)", begun)
        await client.close()
    for _ in range(n):
        begun = time.perf_counter()
        url = urlsplit(runtime.Exec(exec_true).url)
        ws = await WsClient.connect(
            url.hostname or "", url.port or 0, url.path, ["v5.channel.k8s.io"]
        )
        received = await ChannelClient(ws).read_to_end()
        assert b"Success" in received[3]
        timings.record("exec true round trip (WebSocket, RPC included)", begun)

    # busybox head -c feeds a pipe at ~120 MB/s, below what is measured; cat does not.
    source = f"cat /dev/zero | nc -l -p {FORWARD_PORT}"
    run(["sh", "-c", f"while true; do {source}; done"])
    url = urlsplit(runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod)).url)
    client, _ = await connect(
        url.hostname or "",
        url.port or 0,
        url.path,
        ["portforward.k8s.io"],
        flow_control=False,
        window_updates=False,
    )
    port = str(FORWARD_PORT)
    error = await client.open_stream({"streamtype": "error", "port": port, "requestid": "1"})
    data = await client.open_stream({"streamtype": "data", "port": port, "requestid": "1"})
    await error.wait_reply()
    await data.wait_reply()
    begun = time.perf_counter()
    forwarded = 0
    while forwarded < FORWARD_BYTES:
        chunk = await data.read()
        if not chunk:
            break
        forwarded += len(chunk)
    seconds = time.perf_counter() - begun
    await client.close()
    return [
        f"port-forward (SPDY) of {forwarded / 1e6:.0f} MB from a pod: {seconds:.2f} s, "
        f"{forwarded / 1e6 / seconds:.0f} MB/s"
    ]
