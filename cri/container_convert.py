"""Protobuf <-> model conversion for containers, with the request-shape validation."""

from __future__ import annotations

from typing import Any

from cri_api.v1 import api_pb2 as pb

from cri.convert import MODES, enum_value, sandbox_status_to_proto
from cri.userns_convert import mount_mappings, user_namespace
from runtime.containers.events import ContainerEvent, EventKind
from runtime.containers.model import (
    Container,
    ContainerConfig,
    ContainerFilter,
    ContainerSecurity,
    ContainerState,
    Device,
    Mount,
    Propagation,
    Resources,
    Seccomp,
    SeccompKind,
)
from runtime.errors import InvalidArgument
from runtime.pods.model import NamespaceOptions

_PROPAGATION = {
    pb.PROPAGATION_PRIVATE: Propagation.PRIVATE,
    pb.PROPAGATION_HOST_TO_CONTAINER: Propagation.HOST_TO_CONTAINER,
    pb.PROPAGATION_BIDIRECTIONAL: Propagation.BIDIRECTIONAL,
}
_PROPAGATION_TO_PB = {v: k for k, v in _PROPAGATION.items()}
_STATES_TO_PB = {
    ContainerState.CREATED: pb.CONTAINER_CREATED,
    ContainerState.RUNNING: pb.CONTAINER_RUNNING,
    ContainerState.EXITED: pb.CONTAINER_EXITED,
    ContainerState.UNKNOWN: pb.CONTAINER_UNKNOWN,
}
_STATES = {v: k for k, v in _STATES_TO_PB.items()}
_SECCOMP = {
    pb.SecurityProfile.RuntimeDefault: SeccompKind.RUNTIME_DEFAULT,
    pb.SecurityProfile.Unconfined: SeccompKind.UNCONFINED,
    pb.SecurityProfile.Localhost: SeccompKind.LOCALHOST,
}
_EVENTS_TO_PB = {
    EventKind.CREATED: pb.CONTAINER_CREATED_EVENT,
    EventKind.STARTED: pb.CONTAINER_STARTED_EVENT,
    EventKind.STOPPED: pb.CONTAINER_STOPPED_EVENT,
    EventKind.DELETED: pb.CONTAINER_DELETED_EVENT,
}


def container_config_from_proto(request: Any) -> ContainerConfig:
    if not request.pod_sandbox_id:
        raise InvalidArgument("pod_sandbox_id is empty")
    if not request.HasField("config"):
        raise InvalidArgument("config is missing")
    config = request.config
    if not config.HasField("metadata") or not config.metadata.name:
        raise InvalidArgument("config.metadata.name is empty")
    linux = config.linux
    stop_signal = ""
    if config.stop_signal != pb.RUNTIME_DEFAULT:
        stop_signal = pb.Signal.Name(config.stop_signal)
    return ContainerConfig(
        name=config.metadata.name,
        attempt=config.metadata.attempt,
        image=config.image.image,
        command=list(config.command),
        args=list(config.args),
        working_dir=config.working_dir,
        envs={kv.key: kv.value for kv in config.envs},
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        mounts=[_mount(i, m) for i, m in enumerate(config.mounts)],
        devices=[
            Device(d.container_path, d.host_path, d.permissions or "rwm") for d in config.devices
        ],
        log_path=config.log_path,
        stdin=config.stdin,
        stdin_once=config.stdin_once,
        tty=config.tty,
        stop_signal=stop_signal,
        resources=resources_from_proto(linux.resources),
        security=_security(linux.security_context),
    )


def _mount(index: int, mount: Any) -> Mount:
    field = f"config.mounts[{index}]"
    if not mount.container_path.startswith("/"):
        raise InvalidArgument(f"{field}.container_path {mount.container_path!r} is not absolute")
    propagation = enum_value(_PROPAGATION, mount.propagation, f"{field}.propagation")
    if mount.recursive_read_only and (not mount.readonly or propagation is not Propagation.PRIVATE):
        raise InvalidArgument(f"{field}.recursive_read_only needs readonly and PROPAGATION_PRIVATE")
    image = mount.image.image if mount.HasField("image") else ""
    if image:
        if not mount.readonly:
            raise InvalidArgument(f"{field}: an image volume must be readonly")
        return Mount(mount.container_path, "", True, propagation, image, mount.image_sub_path)
    if not mount.host_path.startswith("/"):
        raise InvalidArgument(f"{field}.host_path {mount.host_path!r} is not absolute")
    return Mount(
        mount.container_path,
        mount.host_path,
        mount.readonly,
        propagation,
        recursive_read_only=mount.recursive_read_only,
        idmap=mount_mappings(mount, field),
    )


def resources_from_proto(r: Any) -> Resources:
    return Resources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_bytes=r.memory_limit_in_bytes,
        memory_swap_limit_bytes=r.memory_swap_limit_in_bytes,
        oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        hugepage_limits={h.page_size: h.limit for h in r.hugepage_limits},
        unified=dict(r.unified),
    )


def resources_to_proto(r: Resources) -> Any:
    return pb.ContainerResources(
        linux=pb.LinuxContainerResources(
            cpu_period=r.cpu_period,
            cpu_quota=r.cpu_quota,
            cpu_shares=r.cpu_shares,
            memory_limit_in_bytes=r.memory_limit_bytes,
            memory_swap_limit_in_bytes=r.memory_swap_limit_bytes,
            oom_score_adj=r.oom_score_adj,
            cpuset_cpus=r.cpuset_cpus,
            cpuset_mems=r.cpuset_mems,
            hugepage_limits=[
                pb.HugepageLimit(page_size=k, limit=v) for k, v in r.hugepage_limits.items()
            ],
            unified=r.unified,
        )
    )


def _security(sc: Any) -> ContainerSecurity:
    field = "config.linux.security_context"
    ns = sc.namespace_options
    return ContainerSecurity(
        strict_supplemental_groups=sc.supplemental_groups_policy
        == pb.SupplementalGroupsPolicy.Strict,
        apparmor_profile=_apparmor(sc, field),
        selinux_labelled=any(
            getattr(sc.selinux_options, key) for key in ("user", "role", "type", "level")
        ),
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_username=sc.run_as_username,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        supplemental_groups=list(sc.supplemental_groups),
        privileged=sc.privileged,
        readonly_rootfs=sc.readonly_rootfs,
        no_new_privs=sc.no_new_privs,
        capabilities_add=list(sc.capabilities.add_capabilities),
        capabilities_drop=list(sc.capabilities.drop_capabilities),
        seccomp=_seccomp(sc, field),
        masked_paths=list(sc.masked_paths),
        readonly_paths=list(sc.readonly_paths),
        namespaces=NamespaceOptions(
            network=enum_value(MODES, ns.network, f"{field}.namespace_options.network"),
            pid=enum_value(MODES, ns.pid, f"{field}.namespace_options.pid"),
            ipc=enum_value(MODES, ns.ipc, f"{field}.namespace_options.ipc"),
            target_id=ns.target_id,
            user=user_namespace(
                ns.userns_options,
                ns.HasField("userns_options"),
                f"{field}.namespace_options.userns_options",
            ),
        ),
    )


def _seccomp(sc: Any, field: str) -> Seccomp:
    """The profile the request names, in the `seccomp` message or the deprecated string."""
    if sc.HasField("seccomp"):
        kind = enum_value(_SECCOMP, sc.seccomp.profile_type, f"{field}.seccomp.profile_type")
        if kind is SeccompKind.LOCALHOST and not sc.seccomp.localhost_ref:
            raise InvalidArgument(f"{field}.seccomp.localhost_ref is empty for a Localhost profile")
        return Seccomp(kind, sc.seccomp.localhost_ref)
    path = sc.seccomp_profile_path
    if not path:
        return Seccomp()
    if path in ("runtime/default", "docker/default"):
        return Seccomp(SeccompKind.RUNTIME_DEFAULT)
    if path == "unconfined":
        return Seccomp(SeccompKind.UNCONFINED)
    if path.startswith("localhost/") and len(path) > len("localhost/"):
        return Seccomp(SeccompKind.LOCALHOST, path.removeprefix("localhost/"))
    raise InvalidArgument(
        f"{field}.seccomp_profile_path {path!r}: runtime/default, unconfined or localhost/<path>"
    )


def _apparmor(sc: Any, field: str) -> str:
    """The profile in the form the deprecated apparmor_profile string used."""
    if sc.HasField("apparmor"):
        kind = sc.apparmor.profile_type
        if kind == pb.SecurityProfile.Unconfined:
            return "unconfined"
        if kind == pb.SecurityProfile.Localhost:
            if not sc.apparmor.localhost_ref:
                raise InvalidArgument(f"{field}.apparmor.localhost_ref is empty for Localhost")
            return f"localhost/{sc.apparmor.localhost_ref}"
        return "runtime/default"
    return str(sc.apparmor_profile)


def _metadata(container: Container) -> Any:
    return pb.ContainerMetadata(name=container.config.name, attempt=container.config.attempt)


def container_to_proto(container: Container) -> Any:
    return pb.Container(
        id=container.id,
        pod_sandbox_id=container.sandbox_id,
        metadata=_metadata(container),
        image=pb.ImageSpec(image=container.config.image),
        image_ref=container.image_ref,
        image_id=container.image_id,
        state=_STATES_TO_PB[container.state],
        created_at=container.created_at_ns,
        labels=container.config.labels,
        annotations=container.config.annotations,
    )


def container_status_to_proto(container: Container) -> Any:
    user = container.user
    stop_signal = pb.RUNTIME_DEFAULT
    if container.stop_signal in pb.Signal.keys():  # noqa: SIM118  (an enum wrapper, not a dict)
        stop_signal = pb.Signal.Value(container.stop_signal)
    return pb.ContainerStatus(
        id=container.id,
        metadata=_metadata(container),
        state=_STATES_TO_PB[container.state],
        created_at=container.created_at_ns,
        started_at=container.started_at_ns,
        finished_at=container.finished_at_ns,
        exit_code=container.exit_code,
        image=pb.ImageSpec(image=container.config.image),
        image_ref=container.image_ref,
        image_id=container.image_id,
        reason=container.reason,
        message=container.message,
        labels=container.config.labels,
        annotations=container.config.annotations,
        mounts=[
            pb.Mount(
                container_path=m.container_path,
                host_path=m.host_path,
                readonly=m.readonly,
                propagation=_PROPAGATION_TO_PB[m.propagation],
                image=pb.ImageSpec(image=container.volume_images.get(m.container_path, ""))
                if m.image
                else None,
                image_sub_path=m.image_sub_path,
            )
            for m in container.config.mounts
        ],
        log_path=container.log_path,
        resources=resources_to_proto(container.resources),
        user=pb.ContainerUser(
            linux=pb.LinuxContainerUser(
                uid=user.uid, gid=user.gid, supplemental_groups=user.additional_gids
            )
        )
        if user
        else None,
        stop_signal=stop_signal,
    )


def container_filter_from_proto(request: Any) -> ContainerFilter:
    if not request.HasField("filter"):
        return ContainerFilter()
    f = request.filter
    state = None
    if f.HasField("state"):
        state = enum_value(_STATES, f.state.state, "filter.state.state")
    return ContainerFilter(
        id_prefix=f.id,
        state=state,
        sandbox_id_prefix=f.pod_sandbox_id,
        label_selector=dict(f.label_selector),
    )


def event_to_proto(event: ContainerEvent) -> Any:
    return pb.ContainerEventResponse(
        container_id=event.container.id,
        container_event_type=_EVENTS_TO_PB[event.kind],
        created_at=event.created_at_ns,
        pod_sandbox_status=sandbox_status_to_proto(event.sandbox) if event.sandbox else None,
        containers_statuses=[container_status_to_proto(c) for c in event.pod_containers],
    )
