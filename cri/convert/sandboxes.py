"""Pod sandboxes: RunPodSandbox's config in, status and listing out."""

from __future__ import annotations

from collections.abc import Iterable

from cri.convert.enums import enum_value
from cri.convert.per_version import per_version
from cri.convert.security import namespace_options_from_proto, namespace_options_to_proto
from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument
from runtime.pods.model import (
    DnsConfig,
    PodMetadata,
    PortMapping,
    Protocol,
    Sandbox,
    SandboxConfig,
    SandboxState,
)

_PROTOCOLS = {pb.TCP: Protocol.TCP, pb.UDP: Protocol.UDP, pb.SCTP: Protocol.SCTP}
STATES_TO_PB = {SandboxState.READY: pb.SANDBOX_READY, SandboxState.NOTREADY: pb.SANDBOX_NOTREADY}
STATES = {value: state for state, value in STATES_TO_PB.items()}


def sandbox_config_from_proto(request: pb.RunPodSandboxRequest) -> SandboxConfig:
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
    dns = None
    if config.HasField("dns_config"):
        d = config.dns_config
        dns = DnsConfig(list(d.servers), list(d.searches), list(d.options))
    return SandboxConfig(
        metadata=PodMetadata(md.name, md.uid, md.namespace, md.attempt),
        hostname=config.hostname,
        log_directory=config.log_directory,
        dns=dns,
        port_mappings=_port_mappings(config.port_mappings),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        cgroup_parent=linux.cgroup_parent,
        sysctls=dict(linux.sysctls),
        namespaces=namespace_options_from_proto(
            linux.security_context.namespace_options,
            "config.linux.security_context.namespace_options",
        ),
        privileged=linux.security_context.privileged,
        runtime_handler=request.runtime_handler,
    )


def _port_mappings(mappings: Iterable[pb.PortMapping]) -> list[PortMapping]:
    ports: list[PortMapping] = []
    for i, p in enumerate(mappings):
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
    return ports


def _same_host_port(a: PortMapping, b: PortMapping) -> bool:
    """Both publish one host port: hostPort 0 publishes none, and "" binds every address."""
    same_address = a.host_ip == b.host_ip or "" in (a.host_ip, b.host_ip)
    return (
        a.host_port != 0 and (a.host_port, a.protocol) == (b.host_port, b.protocol) and same_address
    )


def metadata_to_proto(md: PodMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(
        name=md.name, uid=md.uid, namespace=md.namespace, attempt=md.attempt
    )


@per_version
def sandbox_status_to_proto(sandbox: Sandbox) -> pb.PodSandboxStatus:
    return pb.PodSandboxStatus(
        id=sandbox.id,
        metadata=metadata_to_proto(sandbox.config.metadata),
        state=STATES_TO_PB[sandbox.state],
        created_at=sandbox.created_at_ns,
        network=pb.PodSandboxNetworkStatus(
            ip=sandbox.ips[0] if sandbox.ips else "",
            additional_ips=[pb.PodIP(ip=ip) for ip in sandbox.ips[1:]],
        ),
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(options=namespace_options_to_proto(sandbox.config.namespaces))
        ),
        labels=sandbox.config.labels,
        annotations=sandbox.config.annotations,
        runtime_handler=sandbox.runtime_handler,
    )


@per_version
def sandbox_to_proto(sandbox: Sandbox) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=sandbox.id,
        metadata=metadata_to_proto(sandbox.config.metadata),
        state=STATES_TO_PB[sandbox.state],
        created_at=sandbox.created_at_ns,
        labels=sandbox.config.labels,
        annotations=sandbox.config.annotations,
        runtime_handler=sandbox.runtime_handler,
    )
