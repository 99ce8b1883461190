"""The internal model of pods: plain dataclasses, no protobuf."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

from runtime.resources import Resources


class SandboxState(enum.Enum):
    # CREATING rows exist only while RunPodSandbox builds the pod; recovery tears them down.
    CREATING = "creating"
    READY = "ready"
    NOTREADY = "notready"


class NamespaceMode(enum.Enum):
    POD = "pod"
    CONTAINER = "container"
    NODE = "node"
    TARGET = "target"


class Protocol(enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


@dataclass(frozen=True)
class PodMetadata:
    name: str
    uid: str
    namespace: str
    attempt: int = 0

    @property
    def sandbox_name(self) -> str:
        """The name kubelet expects a runtime to reserve for a sandbox."""
        return f"{self.name}_{self.namespace}_{self.uid}_{self.attempt}"


@dataclass(frozen=True)
class DnsConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PortMapping:
    protocol: Protocol
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class IdMapping:
    """container_id..container_id+length-1 inside is host_id..host_id+length-1 outside."""

    host_id: int
    container_id: int
    length: int

    def as_proc_map(self) -> str:
        return f"{self.container_id} {self.host_id} {self.length}\n"


@dataclass(frozen=True)
class UserNamespace:
    """A pod's own user namespace: one uid and one gid range, each mapping container id 0."""

    uids: IdMapping
    gids: IdMapping


@dataclass(frozen=True)
class NamespaceOptions:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.CONTAINER
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""
    # None: the node's user namespace.
    user: UserNamespace | None = None


@dataclass(frozen=True)
class SandboxConfig:
    metadata: PodMetadata
    hostname: str = ""
    log_directory: str = ""
    dns: DnsConfig | None = None
    port_mappings: list[PortMapping] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    namespaces: NamespaceOptions = field(default_factory=NamespaceOptions)
    privileged: bool = False
    runtime_handler: str = ""


@dataclass(frozen=True)
class InfraProcess:
    """The pod's PID-namespace init; start_ticks guards against pid reuse."""

    pid: int
    start_ticks: int


@dataclass(frozen=True)
class PodResources:
    """UpdatePodSandboxResources' figures: the sum of the containers' and the pod's overhead."""

    resources: Resources = field(default_factory=Resources)
    overhead: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class Sandbox:
    id: str
    config: SandboxConfig
    state: SandboxState
    created_at_ns: int
    runtime_handler: str
    cgroup_path: str
    # Namespace kind ("user", "net", "ipc", "uts") -> bind-mount pin; absent for host ones.
    pins: dict[str, str] = field(default_factory=dict)
    shm_path: str = ""
    resolv_conf_path: str = ""
    infra: InfraProcess | None = None
    # Pod addresses, primary first; empty for host-network pods.
    ips: list[str] = field(default_factory=list)
    # The last UpdatePodSandboxResources' figures in force; None until the first one.
    resources: PodResources | None = None

    @property
    def name(self) -> str:
        return self.config.metadata.sandbox_name

    @property
    def netns_path(self) -> str:
        return self.pins.get("net", "")

    def verbose_info(self) -> dict[str, object]:
        """PodSandboxStatus(verbose) details: where the pod's kernel objects are."""
        return {
            "pins": self.pins,
            "cgroup": self.cgroup_path,
            "pids": {"infra": self.infra.pid} if self.infra else {},
            "ips": self.ips,
            "shm": self.shm_path,
            "resolv_conf": self.resolv_conf_path,
            "name": self.name,
            "hostname": self.config.hostname,
            "sysctls": self.config.sysctls,
            "cgroup_parent": self.config.cgroup_parent,
            "resources": asdict(self.resources) if self.resources else None,
        }


@dataclass(frozen=True)
class SandboxFilter:
    id_prefix: str = ""
    state: SandboxState | None = None
    label_selector: dict[str, str] = field(default_factory=dict)

    def matches(self, sandbox: Sandbox) -> bool:
        if self.id_prefix and not sandbox.id.startswith(self.id_prefix):
            return False
        if self.state is not None and sandbox.state is not self.state:
            return False
        labels = sandbox.config.labels
        return all(labels.get(k) == v for k, v in self.label_selector.items())
