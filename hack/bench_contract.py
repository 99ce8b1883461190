"""Figures for the CRI contract's slow paths (issue 14): how soon an ExecSync past its timeout
returns with its process tree killed, and a ReopenContainerLog that returns once the new file
exists."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from cri.proto import api_pb2 as pb

if TYPE_CHECKING:
    # bench_containers calls this module: the protocol is only needed for the types.
    from hack.bench_containers import Timings

EXEC_TIMEOUTS = 5
ROTATIONS = 50


def bench_contract(runtime: Any, image: str, timings: Timings) -> None:
    with tempfile.TemporaryDirectory(prefix="moorage-bench-logs-") as log_dir:
        uid = uuid.uuid4().hex
        pod_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"bench-{uid[:8]}", uid=uid, namespace="bench"),
            log_directory=log_dir,
        )
        pod = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config)).pod_sandbox_id
        try:
            config = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="contract"),
                image=pb.ImageSpec(image=image),
                command=["sleep", "3600"],
                log_path="contract.log",
            )
            cid = runtime.CreateContainer(
                pb.CreateContainerRequest(
                    pod_sandbox_id=pod, config=config, sandbox_config=pod_config
                )
            ).container_id
            runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
            timed_out = pb.ExecSyncRequest(
                container_id=cid, cmd=["sh", "-c", "sleep 60 & sleep 60; wait"], timeout=1
            )
            for _ in range(EXEC_TIMEOUTS):
                begun = time.perf_counter()
                try:
                    runtime.ExecSync(timed_out, timeout=30)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise
                timings.record("ExecSync past a 1 s timeout, tree killed", begun)
            log = Path(log_dir) / "contract.log"
            reopen = pb.ReopenContainerLogRequest(container_id=cid)
            for rotation in range(ROTATIONS):
                log.rename(log.with_name(f"contract.log.{rotation}"))
                timings.time(
                    "ReopenContainerLog after a rename", runtime.ReopenContainerLog, reopen
                )
        finally:
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
            runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
