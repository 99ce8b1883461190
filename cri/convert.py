"""Protobuf <-> model conversion, with the request-shape validation that goes with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cri_api.v1 import api_pb2 as pb

from cri.userns_convert import user_namespace
from runtime.errors import InvalidArgument
from runtime.pods.model import (
    DnsConfig,
    NamespaceMode,
    NamespaceOptions,
    PodMetadata,
    PortMapping,
    Protocol,
    Sandbox,
    SandboxConfig,
    SandboxFilter,
    SandboxState,
)

MODES = {
    pb.POD: NamespaceMode.POD,
    pb.CONTAINER: NamespaceMode.CONTAINER,
    pb.NODE: NamespaceMode.NODE,
    pb.TARGET: NamespaceMode.TARGET,
}
_MODES_TO_PB = {mode: value for value, mode in MODES.items()}
_PROTOCOLS = {pb.TCP: Protocol.TCP, pb.UDP: Protocol.UDP, pb.SCTP: Protocol.SCTP}
_STATES_TO_PB = {SandboxState.READY: pb.SANDBOX_READY, SandboxState.NOTREADY: pb.SANDBOX_NOTREADY}
_STATES = {pb.SANDBOX_READY: SandboxState.READY, pb.SANDBOX_NOTREADY: SandboxState.NOTREADY}


def enum_value(table: Mapping[Any, Any], value: int, field: str) -> Any:
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(f"{field}: unknown value {value}") from None


def sandbox_config_from_proto(request: Any) -> SandboxConfig:
    if not request.HasField("config"):
        raise InvalidArgument("config is missing")
    config = request.config
    if not config.HasField("metadata"):
        raise InvalidArgument("config.metadata is missing")
    md = config.metadata
    for field in ("name", "uid", "namespace"):
        if not getattr(md, field):
            raise InvalidArgument(f"config.metadata.{field} is empty")
    if config.log_directory and not config.log_directory.startswith("/"):
        raise InvalidArgument(
            f"config.log_directory {config.log_directory!r} must be an absolute path"
        )
    linux = config.linux
    ns = linux.security_context.namespace_options
    field = "config.linux.security_context.namespace_options"
    dns = None
    if config.HasField("dns_config"):
        d = config.dns_config
        dns = DnsConfig(list(d.servers), list(d.searches), list(d.options))
    ports: list[PortMapping] = []
    for i, p in enumerate(config.port_mappings):
        protocol = enum_value(_PROTOCOLS, p.protocol, f"config.port_mappings[{i}].protocol")
        for name in ("container_port", "host_port"):
            port = getattr(p, name)
            if not 0 <= port <= 65535:
                raise InvalidArgument(f"config.port_mappings[{i}].{name} {port} is out of range")
        mapping = PortMapping(protocol, p.container_port, p.host_port, p.host_ip)
        for j, earlier in enumerate(ports):
            if _same_host_port(earlier, mapping):
                raise InvalidArgument(
                    f"config.port_mappings[{i}] publishes host port {p.host_port}/"
                    f"{protocol.value} that config.port_mappings[{j}] publishes already"
                )
        ports.append(mapping)
    return SandboxConfig(
        metadata=PodMetadata(md.name, md.uid, md.namespace, md.attempt),
        hostname=config.hostname,
        log_directory=config.log_directory,
        dns=dns,
        port_mappings=ports,
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        cgroup_parent=linux.cgroup_parent,
        sysctls=dict(linux.sysctls),
        namespaces=NamespaceOptions(
            network=enum_value(MODES, ns.network, f"{field}.network"),
            pid=enum_value(MODES, ns.pid, f"{field}.pid"),
            ipc=enum_value(MODES, ns.ipc, f"{field}.ipc"),
            target_id=ns.target_id,
            user=user_namespace(
                ns.userns_options, ns.HasField("userns_options"), f"{field}.userns_options"
            ),
        ),
        privileged=linux.security_context.privileged,
        runtime_handler=request.runtime_handler,
    )


def _same_host_port(a: PortMapping, b: PortMapping) -> bool:
    """Both publish one host port: hostPort 0 publishes none, and "" binds every address."""
    same_address = a.host_ip == b.host_ip or "" in (a.host_ip, b.host_ip)
    return (
        a.host_port != 0 and (a.host_port, a.protocol) == (b.host_port, b.protocol) and same_address
    )


def _metadata_to_proto(md: PodMetadata) -> Any:
    return pb.PodSandboxMetadata(
        name=md.name, uid=md.uid, namespace=md.namespace, attempt=md.attempt
    )


def sandbox_status_to_proto(sandbox: Sandbox) -> Any:
    ns = sandbox.config.namespaces
    return pb.PodSandboxStatus(
        id=sandbox.id,
        metadata=_metadata_to_proto(sandbox.config.metadata),
        state=_STATES_TO_PB[sandbox.state],
        created_at=sandbox.created_at_ns,
        network=pb.PodSandboxNetworkStatus(
            ip=sandbox.ips[0] if sandbox.ips else "",
            additional_ips=[pb.PodIP(ip=ip) for ip in sandbox.ips[1:]],
        ),
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(
                options=pb.NamespaceOption(
                    network=_MODES_TO_PB[ns.network],
                    pid=_MODES_TO_PB[ns.pid],
                    ipc=_MODES_TO_PB[ns.ipc],
                    target_id=ns.target_id,
                )
            )
        ),
        labels=sandbox.config.labels,
        annotations=sandbox.config.annotations,
        runtime_handler=sandbox.runtime_handler,
    )


def sandbox_verbose_info(sandbox: Sandbox) -> dict[str, str]:
    """PodSandboxStatus(verbose) info: where the pod's kernel objects are."""
    info = {
        "pins": sandbox.pins,
        "cgroup": sandbox.cgroup_path,
        "pids": {"infra": sandbox.infra.pid} if sandbox.infra else {},
        "ips": sandbox.ips,
        "shm": sandbox.shm_path,
        "resolv_conf": sandbox.resolv_conf_path,
        "name": sandbox.name,
        "hostname": sandbox.config.hostname,
        "sysctls": sandbox.config.sysctls,
        "cgroup_parent": sandbox.config.cgroup_parent,
    }
    return {"info": json.dumps(info, sort_keys=True)}


def sandbox_to_proto(sandbox: Sandbox) -> Any:
    return pb.PodSandbox(
        id=sandbox.id,
        metadata=_metadata_to_proto(sandbox.config.metadata),
        state=_STATES_TO_PB[sandbox.state],
        created_at=sandbox.created_at_ns,
        labels=sandbox.config.labels,
        annotations=sandbox.config.annotations,
        runtime_handler=sandbox.runtime_handler,
    )


def sandbox_filter_from_proto(request: Any) -> SandboxFilter:
    if not request.HasField("filter"):
        return SandboxFilter()
    f = request.filter
    state = None
    if f.HasField("state"):
        state = enum_value(_STATES, f.state.state, "filter.state.state")
    return SandboxFilter(id_prefix=f.id, state=state, label_selector=dict(f.label_selector))
