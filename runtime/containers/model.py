"""The internal model of containers: plain dataclasses, no protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from runtime.pods.model import NamespaceOptions, UserNamespace
from runtime.resources import Resources


class ContainerState(enum.Enum):
    # CREATING rows exist only while CreateContainer builds it; recovery tears them down.
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class Propagation(enum.Enum):
    PRIVATE = "private"
    HOST_TO_CONTAINER = "host_to_container"
    BIDIRECTIONAL = "bidirectional"


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    propagation: Propagation = Propagation.PRIVATE
    # An image volume: this image's rootfs (or image_sub_path in it), read-only; no host_path.
    image: str = ""
    image_sub_path: str = ""
    # Read-only all the way down: submounts of host_path too (needs readonly and PRIVATE).
    recursive_read_only: bool = False
    # Files appear with host ids shifted by this mapping (the pod's): an idmapped mount.
    idmap: UserNamespace | None = None
    # Per-mount flags (noexec, nosuid, ...) the runtime sets by remounting the bind.
    mount_options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Device:
    container_path: str
    host_path: str
    permissions: str = "rwm"


class SeccompKind(enum.Enum):
    RUNTIME_DEFAULT = "runtime_default"
    UNCONFINED = "unconfined"
    LOCALHOST = "localhost"


@dataclass(frozen=True)
class Seccomp:
    # None: the request named no profile; the node's default_seccomp decides (the CRI's
    # default is Unconfined: the kubelet asks for RuntimeDefault when it wants it).
    kind: SeccompKind | None = None
    # The profile file on the node, for LOCALHOST.
    localhost_path: str = ""


@dataclass(frozen=True)
class ContainerSecurity:
    run_as_user: int | None = None
    run_as_username: str = ""
    run_as_group: int | None = None
    supplemental_groups: list[int] = field(default_factory=list)
    privileged: bool = False
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    capabilities_add: list[str] = field(default_factory=list)
    capabilities_drop: list[str] = field(default_factory=list)
    seccomp: Seccomp = field(default_factory=Seccomp)
    # Empty lists mean the runtime's defaults.
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    namespaces: NamespaceOptions = field(default_factory=NamespaceOptions)
    # SupplementalGroupsPolicy Strict: only the request's groups, not the image's /etc/group.
    strict_supplemental_groups: bool = False
    # "" (not asked), "unconfined", "runtime/default" or "localhost/<profile>".
    apparmor_profile: str = ""
    # Whether the request carried SELinux options (accepted only on hosts without SELinux).
    selinux_labelled: bool = False


@dataclass(frozen=True)
class ContainerConfig:
    name: str
    image: str
    attempt: int = 0
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    working_dir: str = ""
    # A later duplicate in the request wins.
    envs: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    # Relative to the sandbox's log_directory.
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    # Overrides the image's StopSignal ("SIGTERM", ...).
    stop_signal: str = ""
    resources: Resources = field(default_factory=Resources)
    security: ContainerSecurity = field(default_factory=ContainerSecurity)


@dataclass(frozen=True)
class ImageRuntimeConfig:
    """What an image's config says about running it (its `config` object)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""


@dataclass(frozen=True)
class ProcessUser:
    """The identity the container's process runs as, resolved against the image."""

    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    username: str = ""
    home: str = "/"


@dataclass(frozen=True)
class Container:
    id: str
    sandbox_id: str
    config: ContainerConfig
    state: ContainerState
    created_at_ns: int
    # The image as resolved at create: its id (config digest) and a digest reference.
    image_id: str
    image_ref: str
    runtime_handler: str
    bundle: str
    # The absolute CRI log file (sandbox log_directory + config.log_path), "" for none.
    log_path: str = ""
    user: ProcessUser | None = None
    stop_signal: str = ""
    # Image volumes: container path -> id of the image mounted there.
    volume_images: dict[str, str] = field(default_factory=dict)
    # And their digest references (as image_ref); rows from before it have none.
    volume_image_refs: dict[str, str] = field(default_factory=dict)
    # The resources in force (CreateContainer's, then each UpdateContainerResources').
    resources: Resources = field(default_factory=Resources)
    pid: int = 0
    conmon_pid: int = 0
    started_at_ns: int = 0
    finished_at_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    # Removed for the CRI, its host files, runtime state and cgroup still being cleaned up.
    removing: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def verbose_info(self) -> dict[str, object]:
        """ContainerStatus(verbose) details: the processes and files that run it."""
        return {
            "pid": self.pid,
            "conmon_pid": self.conmon_pid,
            "bundle": self.bundle,
            "runtime": self.runtime_handler,
            "sandbox_id": self.sandbox_id,
        }


@dataclass(frozen=True)
class ContainerFilter:
    id_prefix: str = ""
    state: ContainerState | None = None
    sandbox_id_prefix: str = ""
    label_selector: dict[str, str] = field(default_factory=dict)

    def matches(self, container: Container) -> bool:
        if self.id_prefix and not container.id.startswith(self.id_prefix):
            return False
        if self.state is not None and container.state is not self.state:
            return False
        if self.sandbox_id_prefix and not container.sandbox_id.startswith(self.sandbox_id_prefix):
            return False
        labels = container.config.labels
        return all(labels.get(k) == v for k, v in self.label_selector.items())
