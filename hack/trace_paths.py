"""How far a newcomer walks: the project files and the cross-layer calls that RunPodSandbox
(servicer to the first netlink call) and CreateContainer + StartContainer (servicer to reply)
go through, traced in a real agent (hack/traced_agent.py) on this host.

Usage: hack/trace_paths (root; starts its own agent and local registry, removes them after).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from hack.bench_agent import REPO, own_agent, sandbox_config
from hack.bench_containers import pulled_test_image

Event = tuple[str, str, str]


def package(path: str) -> str:
    return path.split("/", 1)[0]


def room(path: str) -> str:
    """runtime/pods/setup.py -> runtime/pods; runtime/agent.py, cri/x.py -> runtime, cri."""
    parts = path.split("/")
    return "/".join(parts[:2]) if parts[0] == "runtime" and len(parts) > 2 else parts[0]


def walk(events: Sequence[Event], start: tuple[str, str], stop_at_netlink: bool) -> str:
    begin = next(i for i, e in enumerate(events) if (e[1], e[2]) == start)
    end = len(events)
    if stop_at_netlink:
        end = next(i for i in range(begin, len(events)) if events[i][1] == "<netlink>")
    files: list[str] = []
    edges: set[tuple[str, str]] = set()
    for caller, callee, _ in events[begin:end]:
        if callee not in files:
            files.append(callee)
        if caller and caller != callee:
            edges.add((caller, callee))
    across_packages = {e for e in edges if package(e[0]) != package(e[1])}
    across_rooms = {e for e in edges if room(e[0]) != room(e[1])}
    lines = [
        f"  {len(files)} files, {len(edges)} distinct file-to-file calls, "
        f"{len(across_packages)} across packages (cri/runtime/network/metrics), "
        f"{len(across_rooms)} across rooms",
        *(f"    {name}" for name in files),
    ]
    return "\n".join(lines)


def recorded(pid: int, trace: Path) -> list[Event]:
    trace.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    # The agent renames the finished trace into place, so existing means complete.
    while not trace.exists():
        if time.monotonic() > deadline:
            sys.exit("the traced agent wrote no trace")
        time.sleep(0.05)
    return [(caller, callee, name) for caller, callee, name in json.loads(trace.read_text())]


def main() -> int:
    trace = Path(tempfile.mkdtemp(prefix="mtrace-")) / "trace.json"
    launcher = [REPO / ".venv/bin/python", REPO / "hack/traced_agent.py"]
    with own_agent(launcher, {"MOORAGE_TRACE_FILE": str(trace)}) as (socket, pid):
        channel = grpc.insecure_channel(f"unix://{socket}")
        runtime = api_pb2_grpc.RuntimeServiceStub(channel)
        images = api_pb2_grpc.ImageServiceStub(channel)
        with pulled_test_image(images) as image:
            pod_config = sandbox_config(pb.CONTAINER)
            recorded(pid, trace)
            pod_id = runtime.RunPodSandbox(
                pb.RunPodSandboxRequest(config=pod_config)
            ).pod_sandbox_id
            run = recorded(pid, trace)
            config = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="traced"),
                image=pb.ImageSpec(image=image),
                command=["sleep", "60"],
            )
            create = pb.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config
            )
            container_id = runtime.CreateContainer(create).container_id
            runtime.StartContainer(pb.StartContainerRequest(container_id=container_id))
            start = recorded(pid, trace)
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    servicer = next(e[1] for e in run if e[2] == "RunPodSandbox")
    create_servicer = next(e[1] for e in start if e[2] == "CreateContainer")
    print("RunPodSandbox, servicer to the first netlink call:")
    print(walk(run, (servicer, "RunPodSandbox"), stop_at_netlink=True))
    print("CreateContainer + StartContainer, servicer to reply:")
    print(walk(start, (create_servicer, "CreateContainer"), stop_at_netlink=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
