"""Exec, Attach and PortForward requests as the streaming server's session requests."""

from __future__ import annotations

from cri.proto import api_pb2 as pb
from cri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from runtime.containers.model import Container
from runtime.errors import InvalidArgument

_MAX_PORT = 65535


def sandbox_id(request: pb.PortForwardRequest) -> str:
    if not request.pod_sandbox_id:
        raise InvalidArgument("pod_sandbox_id is empty")
    return str(request.pod_sandbox_id)


def exec_request_from_proto(request: pb.ExecRequest, container: Container) -> ExecRequest:
    if not request.cmd:
        raise InvalidArgument("cmd is empty")
    _check_streams(request)
    return ExecRequest(
        container.id,
        tuple(request.cmd),
        request.tty,
        request.stdin,
        request.stdout,
        request.stderr,
    )


def attach_request_from_proto(request: pb.AttachRequest, container: Container) -> AttachRequest:
    _check_streams(request)
    if request.stdin and not container.config.stdin:
        raise InvalidArgument(
            f"container {container.id} was not created with stdin: nothing to attach to"
        )
    return AttachRequest(container.id, request.tty, request.stdin, request.stdout, request.stderr)


def port_forward_request_from_proto(
    request: pb.PortForwardRequest, sandbox_id: str
) -> PortForwardRequest:
    for port in request.port:
        if not 0 < port <= _MAX_PORT:
            raise InvalidArgument(f"port {port} is out of range")
    return PortForwardRequest(sandbox_id, tuple(request.port))


def _check_streams(request: pb.ExecRequest | pb.AttachRequest) -> None:
    """kubelet's rules: some stream to carry, and a terminal merges stderr into stdout."""
    if not (request.stdin or request.stdout or request.stderr):
        raise InvalidArgument("one of stdin, stdout and stderr must be set")
    if request.tty and request.stderr:
        raise InvalidArgument("tty and stderr cannot both be set: a terminal has one output")
