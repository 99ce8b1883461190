"""Conversions kept per object version: a new version of a row is converted afresh, and the
answer kubelet reads is the same as a conversion from scratch."""

from __future__ import annotations

from dataclasses import replace

from cri.convert.containers import container_status_to_proto, container_to_proto
from cri.convert.sandboxes import sandbox_status_to_proto, sandbox_to_proto
from cri.proto import api_pb2 as pb
from runtime.containers.model import ContainerState
from runtime.pods.model import SandboxState
from tests.unit.builders import container, sandbox


def test_a_replaced_container_is_converted_afresh_and_the_old_version_keeps_its_answer() -> None:
    created = replace(container("c1"), state=ContainerState.CREATED)
    assert container_status_to_proto(created).state == pb.CONTAINER_CREATED

    running = replace(created, state=ContainerState.RUNNING, started_at_ns=7)

    assert container_status_to_proto(running).state == pb.CONTAINER_RUNNING
    assert container_status_to_proto(running).started_at == 7
    assert container_to_proto(running).state == pb.CONTAINER_RUNNING
    assert container_status_to_proto(created).state == pb.CONTAINER_CREATED


def test_a_replaced_sandbox_is_converted_afresh() -> None:
    ready = sandbox("p1", state=SandboxState.READY)
    assert sandbox_to_proto(ready).state == pb.SANDBOX_READY
    assert sandbox_status_to_proto(ready).state == pb.SANDBOX_READY

    stopped = replace(ready, state=SandboxState.NOTREADY)

    assert sandbox_to_proto(stopped).state == pb.SANDBOX_NOTREADY
    assert sandbox_status_to_proto(stopped).state == pb.SANDBOX_NOTREADY


def test_an_answer_built_from_a_kept_message_leaves_the_kept_one_as_it_was() -> None:
    row = container("c2")
    response = pb.ContainerStatusResponse(status=container_status_to_proto(row))

    response.status.reason = "changed by a caller"

    assert container_status_to_proto(row).reason == row.reason
