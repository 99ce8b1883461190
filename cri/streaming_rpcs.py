"""Exec, Attach and PortForward: each checks its request and answers with a single-use URL on
the streaming server, where the client then upgrades to SPDY or WebSocket."""

from __future__ import annotations

from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb

from cri.handlers import Handlers
from cri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from runtime.containers.model import Container, ContainerState
from runtime.errors import FailedPrecondition, InvalidArgument, Unavailable
from runtime.pods.model import SandboxState

MAX_PORT = 65535


class StreamingRpcs(Handlers):
    async def Exec(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        container = self._running(request.container_id)
        if not request.cmd:
            raise InvalidArgument("cmd is empty")
        _check_streams(request)
        url = self._url(
            ExecRequest(
                container.id,
                tuple(request.cmd),
                request.tty,
                request.stdin,
                request.stdout,
                request.stderr,
            )
        )
        return pb.ExecResponse(url=url)

    async def Attach(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        container = self._running(request.container_id)
        _check_streams(request)
        if request.stdin and not container.config.stdin:
            raise InvalidArgument(
                f"container {container.id} was not created with stdin: nothing to attach to"
            )
        url = self._url(
            AttachRequest(container.id, request.tty, request.stdin, request.stdout, request.stderr)
        )
        return pb.AttachResponse(url=url)

    async def PortForward(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id is empty")
        sandbox = self.runtime.sandboxes.status(request.pod_sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        for port in request.port:
            if not 0 < port <= MAX_PORT:
                raise InvalidArgument(f"port {port} is out of range")
        return pb.PortForwardResponse(
            url=self._url(PortForwardRequest(sandbox.id, tuple(request.port)))
        )

    def _running(self, container_id: str) -> Container:
        if not container_id:
            raise InvalidArgument("container_id is empty")
        container = self.runtime.containers.status(container_id)
        if container.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running")
        sandbox = self.runtime.sandboxes.status(container.sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        return container

    def _url(self, request: ExecRequest | AttachRequest | PortForwardRequest) -> str:
        if self.streaming is None:
            raise Unavailable("the streaming server is not running")
        return self.streaming.url_for(request)


def _check_streams(request: Any) -> None:
    """kubelet's rules: some stream to carry, and a terminal merges stderr into stdout."""
    if not (request.stdin or request.stdout or request.stderr):
        raise InvalidArgument("one of stdin, stdout and stderr must be set")
    if request.tty and request.stderr:
        raise InvalidArgument("tty and stderr cannot both be set: a terminal has one output")
