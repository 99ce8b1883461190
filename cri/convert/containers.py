"""Containers: CreateContainer's config in; listing, status and events out."""

from __future__ import annotations

from typing import Protocol

from cri.convert.mounts import device_from_proto, mount_from_proto, mounts_to_proto
from cri.convert.per_version import per_version
from cri.convert.resources import resources_from_proto, resources_to_proto
from cri.convert.sandboxes import sandbox_status_to_proto
from cri.convert.security import container_security_from_proto
from cri.convert.signals import stop_signal_from_proto, stop_signal_to_proto
from cri.proto import api_pb2 as pb
from runtime.containers.events import ContainerEvent, EventKind
from runtime.containers.model import Container, ContainerConfig, ContainerState
from runtime.errors import InvalidArgument

STATES_TO_PB = {
    ContainerState.CREATED: pb.CONTAINER_CREATED,
    ContainerState.RUNNING: pb.CONTAINER_RUNNING,
    ContainerState.EXITED: pb.CONTAINER_EXITED,
    ContainerState.UNKNOWN: pb.CONTAINER_UNKNOWN,
}
STATES = {value: state for state, value in STATES_TO_PB.items()}
_EVENTS_TO_PB = {
    EventKind.CREATED: pb.CONTAINER_CREATED_EVENT,
    EventKind.STARTED: pb.CONTAINER_STARTED_EVENT,
    EventKind.STOPPED: pb.CONTAINER_STOPPED_EVENT,
    EventKind.DELETED: pb.CONTAINER_DELETED_EVENT,
}


class ContainerIdRequest(Protocol):
    """Every request naming one container."""

    @property
    def container_id(self) -> str: ...


def container_id(request: ContainerIdRequest) -> str:
    if not request.container_id:
        raise InvalidArgument("container_id is empty")
    return str(request.container_id)


def stop_timeout_s(request: pb.StopContainerRequest) -> float:
    # The kubelet may send a negative grace period: it means "kill now", as 0 does.
    return float(max(request.timeout, 0))


def exec_sync_timeout_s(request: pb.ExecSyncRequest) -> float:
    if request.timeout < 0:
        raise InvalidArgument(f"timeout {request.timeout} is negative")
    return float(request.timeout)


def container_config_from_proto(request: pb.CreateContainerRequest) -> ContainerConfig:
    if not request.pod_sandbox_id:
        raise InvalidArgument("pod_sandbox_id is empty")
    if not request.HasField("config"):
        raise InvalidArgument("config is missing")
    config = request.config
    if not config.HasField("metadata") or not config.metadata.name:
        raise InvalidArgument("config.metadata.name is empty")
    linux = config.linux
    return ContainerConfig(
        name=config.metadata.name,
        attempt=config.metadata.attempt,
        image=config.image.image,
        command=list(config.command),
        args=list(config.args),
        working_dir=config.working_dir,
        # KeyValue.value is bytes: a value that is not UTF-8 keeps its bytes as surrogates.
        envs={kv.key: kv.value.decode(errors="surrogateescape") for kv in config.envs},
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        mounts=[mount_from_proto(i, m) for i, m in enumerate(config.mounts)],
        devices=[device_from_proto(d) for d in config.devices],
        log_path=config.log_path,
        stdin=config.stdin,
        stdin_once=config.stdin_once,
        tty=config.tty,
        stop_signal=stop_signal_from_proto(config.stop_signal),
        resources=resources_from_proto(linux.resources),
        security=container_security_from_proto(linux.security_context),
    )


def metadata_to_proto(container: Container) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=container.config.name, attempt=container.config.attempt)


@per_version
def container_to_proto(container: Container) -> pb.Container:
    return pb.Container(
        id=container.id,
        pod_sandbox_id=container.sandbox_id,
        metadata=metadata_to_proto(container),
        # No ImageSpec.image_ref here: Container.image_ref carries it already, and repeating it
        # made ListContainers, the kubelet's most frequent call, 35 % slower in hack/bench.
        image=pb.ImageSpec(image=container.config.image),
        image_ref=container.image_ref,
        image_id=container.image_id,
        state=STATES_TO_PB[container.state],
        created_at=container.created_at_ns,
        labels=container.config.labels,
        annotations=container.config.annotations,
    )


@per_version
def container_status_to_proto(container: Container) -> pb.ContainerStatus:
    user = container.user
    return pb.ContainerStatus(
        id=container.id,
        metadata=metadata_to_proto(container),
        state=STATES_TO_PB[container.state],
        created_at=container.created_at_ns,
        started_at=container.started_at_ns,
        finished_at=container.finished_at_ns,
        exit_code=container.exit_code,
        image=pb.ImageSpec(image=container.config.image, image_ref=container.image_ref),
        image_ref=container.image_ref,
        image_id=container.image_id,
        reason=container.reason,
        message=container.message,
        labels=container.config.labels,
        annotations=container.config.annotations,
        mounts=mounts_to_proto(container),
        log_path=container.log_path,
        resources=resources_to_proto(container.resources),
        user=pb.ContainerUser(
            linux=pb.LinuxContainerUser(
                uid=user.uid, gid=user.gid, supplemental_groups=user.additional_gids
            )
        )
        if user
        else None,
        stop_signal=stop_signal_to_proto(container.stop_signal),
    )


def event_to_proto(event: ContainerEvent) -> pb.ContainerEventResponse:
    return pb.ContainerEventResponse(
        container_id=event.container.id,
        container_event_type=_EVENTS_TO_PB[event.kind],
        created_at=event.created_at_ns,
        pod_sandbox_status=sandbox_status_to_proto(event.sandbox) if event.sandbox else None,
        containers_statuses=[container_status_to_proto(c) for c in event.pod_containers],
    )
