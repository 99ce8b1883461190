"""What the runtime layer needs from the agent's configuration (parsed in cri/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from network.bridge_network import BridgeSettings
from network.cni import CniSettings
from runtime.containers.model import SeccompKind
from runtime.layout import Layout


@dataclass(frozen=True)
class RuntimeHandlerSettings:
    name: str
    path: Path


@dataclass(frozen=True)
class ImageSettings:
    registries_conf: Path = Path("/etc/containers/registries.conf")
    certs_dir: Path = Path("/etc/containers/certs.d")
    max_concurrent_downloads: int = 3
    # Uncompressed bytes one layer may unpack to: past it the layer is a decompression bomb.
    max_layer_bytes: int = 32 * 1024**3
    pull_retries: int = 3
    pinned_images: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeSettings:
    root_dir: Path = Path("/var/lib/moorage")
    run_dir: Path = Path("/run/moorage")
    default_handler: str = "crun"
    handlers: dict[str, RuntimeHandlerSettings] = field(
        default_factory=lambda: {
            "crun": RuntimeHandlerSettings("crun", Path("/usr/bin/crun")),
            "runc": RuntimeHandlerSettings("runc", Path("/usr/sbin/runc")),
        }
    )
    conmon_path: Path = Path("/usr/bin/conmon")
    # Bound into containers whose env has non-UTF-8 values (runtime/oci/env_exec.py).
    env_exec_path: Path = Path("/usr/local/libexec/moorage/env-exec")
    seccomp_profile: Path = Path("/usr/share/containers/seccomp.json")
    # For containers whose request names no seccomp profile: the CRI's Unconfined, or
    # RuntimeDefault on nodes that want every container filtered.
    default_seccomp: SeccompKind = SeccompKind.UNCONFINED
    cgroup_driver: str = "cgroupfs"
    default_cgroup_parent: str = "/moorage"
    infra_command: tuple[str, ...] = ("/usr/bin/catatonit", "-P")
    shm_size_bytes: int = 64 * 1024 * 1024
    pod_cidr: str = "10.85.0.0/16"
    network_mode: str = "bridge"
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dirs: tuple[Path, ...] = (Path("/opt/cni/bin"), Path("/usr/lib/cni"))
    cni_plugin_timeout_s: float = 10.0
    images: ImageSettings = field(default_factory=ImageSettings)

    @property
    def layout(self) -> Layout:
        return Layout(self.root_dir, self.run_dir)

    @property
    def cni(self) -> CniSettings:
        return CniSettings(
            cache_dir=self.layout.cni_cache_dir,
            conf_dir=self.cni_conf_dir,
            bin_dirs=self.cni_bin_dirs,
            plugin_timeout_s=self.cni_plugin_timeout_s,
        )

    def handler(self, name: str) -> RuntimeHandlerSettings:
        return self.handlers[name or self.default_handler]
