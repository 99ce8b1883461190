"""Building CRI requests with unique names, and asserting on CRI errors."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb


def pod_config(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    hostname: str = "",
    dns: Any = None,
    sysctls: dict[str, str] | None = None,
    network: Any = pb.POD,
    pid: Any = pb.POD,
    ipc: Any = pb.POD,
    attempt: int = 0,
    userns: Any = None,
) -> Any:
    """A PodSandboxConfig whose metadata (name, uid, namespace) no other call returns."""
    token = secrets.token_hex(4)
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=f"e2e-pod-{token}",
            uid=str(uuid.uuid4()),
            namespace=f"e2e-ns-{token}",
            attempt=attempt,
        ),
        hostname=hostname,
        labels=labels or {},
        annotations=annotations or {},
        linux=pb.LinuxPodSandboxConfig(
            sysctls=sysctls or {},
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(
                    network=network, pid=pid, ipc=ipc, userns_options=userns
                )
            ),
        ),
    )
    if dns is not None:
        config.dns_config.CopyFrom(dns)
    return config


def rpc_error(call: Callable[[], object]) -> Any:
    """Run a CRI call that must fail; returns the grpc.RpcError (code(), details())."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def assert_rpc_error(call: Callable[[], object], code: Any, *in_message: str) -> str:
    """The call fails with `code` and a message containing every string of `in_message`."""
    error = rpc_error(call)
    assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
    message: str = error.details()
    for part in in_message:
        assert part in message, f"{part!r} not in error message {message!r}"
    return message
