"""Every path the agent keeps state under, persistent (root_dir) and volatile (run_dir).

Recovery after a restart finds pods and containers by these paths: changing one strands the
state an older agent left. Nothing else in the agent joins names onto root_dir or run_dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SandboxPaths:
    # Persistent per-pod files (resolv.conf) that containers bind-mount.
    dir: Path
    # Volatile per-pod mounts (/dev/shm) that a reboot must not find stale.
    run_dir: Path

    @property
    def shm(self) -> Path:
        return self.run_dir / "shm"

    @property
    def resolv_conf(self) -> Path:
        return self.dir / "resolv.conf"


@dataclass(frozen=True)
class ContainerPaths:
    # The OCI bundle: config.json and conmon's files (pid files, the ctl FIFO).
    bundle: Path
    upper: Path
    work: Path
    # The rootfs mount point, gone with a reboot as the mount is.
    rootfs: Path

    @property
    def config(self) -> Path:
        return self.bundle / "config.json"

    @property
    def ctl(self) -> Path:
        """conmon's control FIFO: window resizes and log reopening."""
        return self.bundle / "ctl"

    @property
    def volumes(self) -> Path:
        """Where image volumes and recursively read-only binds are mounted before they are
        bound into the container."""
        return self.rootfs.parent / "volumes"


@dataclass(frozen=True)
class Layout:
    root_dir: Path
    run_dir: Path

    @property
    def state_db(self) -> Path:
        return self.root_dir / "state.db"

    @property
    def lock_file(self) -> Path:
        """Held by the agent using root_dir: two agents on one state would undo each other."""
        return self.root_dir / "moorage.lock"

    @property
    def content_dir(self) -> Path:
        """Verified blobs (layers, configs, manifests) by digest."""
        return self.root_dir / "content"

    @property
    def layers_dir(self) -> Path:
        """Unpacked layers by chain id: the lower dirs of container rootfs overlays."""
        return self.root_dir / "layers"

    @property
    def cni_cache_dir(self) -> Path:
        """CNI results of attached pods, for DEL."""
        return self.root_dir / "cni"

    @property
    def sandboxes_dir(self) -> Path:
        return self.root_dir / "sandboxes"

    @property
    def sandboxes_run_dir(self) -> Path:
        return self.run_dir / "sandboxes"

    def sandbox(self, sandbox_id: str) -> SandboxPaths:
        return SandboxPaths(self.sandboxes_dir / sandbox_id, self.sandboxes_run_dir / sandbox_id)

    @property
    def containers_dir(self) -> Path:
        """Per container: the OCI bundle and the upper/work dirs (the writable layers)."""
        return self.root_dir / "containers"

    @property
    def containers_run_dir(self) -> Path:
        return self.run_dir / "containers"

    def container(self, container_id: str) -> ContainerPaths:
        bundle = self.containers_dir / container_id
        return ContainerPaths(
            bundle=bundle,
            upper=bundle / "upper",
            work=bundle / "work",
            rootfs=self.containers_run_dir / container_id / "rootfs",
        )

    @property
    def exits_dir(self) -> Path:
        """conmon writes each container's exit code here, in a file named by its id."""
        return self.run_dir / "exits"

    def exit_file(self, container_id: str) -> Path:
        return self.exits_dir / container_id

    @property
    def attach_dir(self) -> Path:
        return self.run_dir / "attach"

    def attach_link(self, container_id: str) -> Path:
        """conmon links it to the bundle: a path short enough for a unix socket address."""
        return self.attach_dir / container_id

    def attach_socket(self, container_id: str) -> Path:
        return self.attach_link(container_id) / "attach"

    @property
    def oci_dir(self) -> Path:
        return self.run_dir / "oci"

    def oci_state_dir(self, handler: str) -> Path:
        """The OCI runtime's --root for one handler: our containers never mix with others'."""
        return self.oci_dir / handler

    @property
    def oci_wrappers_dir(self) -> Path:
        """Scripts conmon runs as the OCI runtime where `create` needs a mount hidden."""
        return self.oci_dir / "wrappers"

    def pin_dir(self, kind: str) -> Path:
        return self.run_dir / f"{kind}ns"

    def pin_path(self, kind: str, sandbox_id: str) -> Path:
        return self.pin_dir(kind) / sandbox_id
