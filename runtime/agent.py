"""The runtime as the CRI front sees it: state, sandboxes and runtime-wide settings."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from network.bridge_network import BridgeNetwork
from network.cni import CniNetwork
from network.errors import InvalidNetworkRequest
from network.ipam import parse_ranges
from network.types import PodNetwork
from runtime.containers.exit_watcher import ExitWatcher
from runtime.containers.host_work import KernelContainerHost
from runtime.containers.layer_usage import WritableLayerUsage
from runtime.containers.manager import ContainerManager
from runtime.containers.recovery import reconcile_containers
from runtime.errors import InvalidArgument
from runtime.host.cgroups import CgroupLayout, CgroupMode
from runtime.host.disk_usage import DiskUsage, disk_usage
from runtime.images.manager import ImageManager
from runtime.oci.runtime_cli import OciRuntime
from runtime.pods.host_work import KernelSandboxHost
from runtime.pods.manager import SandboxManager
from runtime.pods.model import SandboxFilter, SandboxState
from runtime.pods.recovery import reconcile_sandboxes
from runtime.pods.userns import supported as userns_supported
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from runtime.streaming.sessions import StreamingSessions

_POD_CIDR_KEY = "pod_cidr"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class RuntimeStatus:
    """What the Status RPC reports, read in one call."""

    runtime: Readiness
    network: Readiness
    handlers: list[str]
    user_namespaces: bool
    pod_cidr: str


class Runtime:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.layout = layout = settings.layout
        dirs = (layout.exits_dir, layout.attach_dir, layout.containers_run_dir)
        for directory in (layout.root_dir, layout.run_dir, *self.store_dirs(), *dirs):
            directory.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.db = StateDB(layout.state_db)
        self.cgroups = CgroupLayout.detect()
        self.bridge: BridgeNetwork | None = None
        self.network: PodNetwork
        if settings.network_mode == "cni":
            self.network = CniNetwork(settings.cni)
        else:
            self.bridge = BridgeNetwork(settings.bridge, self.pod_cidr, self.db)
            self.network = self.bridge
        self.sandboxes = SandboxManager(
            settings, SandboxStore(self.db), KernelSandboxHost(settings, self.cgroups, self.network)
        )
        self.images = ImageManager(settings, self.db)
        self.runtimes = {
            name: OciRuntime(
                name,
                handler.path,
                layout.oci_state_dir(name),
                layout.oci_wrappers_dir,
                hide_mount=self._hidden_for(handler.path),
            )
            for name, handler in settings.handlers.items()
        }
        container_store = ContainerStore(self.db)
        self.containers = ContainerManager(
            settings,
            container_store,
            self.sandboxes.store,
            self.images,
            KernelContainerHost(settings, self.cgroups, container_store, self.runtimes),
        )
        self.streams = StreamingSessions(settings, self.containers, self.sandboxes, self.runtimes)
        self._exit_watcher: ExitWatcher | None = None
        self.layer_usage = WritableLayerUsage(
            lambda: {c.id: layout.container(c.id).upper for c in self.containers.all()}
        )

    def _hidden_for(self, binary: Path) -> Path | None:
        """crun 1.8 refuses to create containers on a hybrid host while it sees the unified
        hierarchy (FIELD-NOTES); its create runs in a mount namespace without it."""
        if binary.name == "crun" and self.cgroups.mode is CgroupMode.HYBRID:
            return self.cgroups.unified_root
        return None

    def watch_exits(self) -> None:
        """Start reporting container exits, those that happened before included."""
        self._exit_watcher = ExitWatcher(self.layout.exits_dir, self.containers.on_exit)
        self._exit_watcher.start()

    async def start_container(self, id_or_prefix: str) -> None:
        await self.containers.start(id_or_prefix)
        started = self.containers.status(id_or_prefix)
        # A first writable-layer figure now, not at the next round of measurements.
        self.layer_usage.measure_soon(started.id, self.layout.container(started.id).upper)

    async def stop_sandbox(self, id_or_prefix: str) -> None:
        sandbox = self.sandboxes.find(id_or_prefix)
        if sandbox is not None:
            await self.containers.stop_all(sandbox.id)
        await self.sandboxes.stop(id_or_prefix)

    async def remove_sandbox(self, id_or_prefix: str) -> None:
        sandbox = self.sandboxes.find(id_or_prefix)
        if sandbox is not None:
            await self.containers.remove_all(sandbox.id)
        await self.sandboxes.remove(id_or_prefix)

    def store_dirs(self) -> tuple[Path, Path, Path]:
        """(blobs, unpacked layers, writable layers): what ImageFsInfo reports on."""
        return self.layout.content_dir, self.layout.layers_dir, self.layout.containers_dir

    async def recover_state(self) -> list[str]:
        """Reconcile pod and container rows with the host: before any call reads or changes
        them."""
        fixed = await asyncio.to_thread(
            reconcile_sandboxes, self.settings, self.cgroups, self.sandboxes.store
        )
        return fixed + await reconcile_containers(
            self.settings,
            self.cgroups,
            (self.containers.store, self.sandboxes.store),
            self.runtimes,
        )

    async def recover_images(self) -> list[str]:
        """Drop what interrupted pulls and removals left: before any image call."""
        return await asyncio.to_thread(self.images.recover)

    async def recover_network(self) -> list[str]:
        """Drop addresses, veths and rules of pods that are no longer ready; set the host up."""
        live = [
            self.sandboxes.network_request(s)
            for s in self.sandboxes.select(SandboxFilter(state=SandboxState.READY))
            if s.netns_path
        ]
        fixed = await self.network.reconcile(live)
        await self.network.prepare()
        return fixed

    def close(self) -> None:
        if self._exit_watcher is not None:
            self._exit_watcher.close()
        self.db.close()

    @property
    def pod_cidr(self) -> str:
        return self.db.setting(_POD_CIDR_KEY) or self.settings.pod_cidr

    def set_pod_cidr(self, cidr: str) -> None:
        """Store the CIDR kubelet sends; an empty one means "keep what you have"."""
        if not cidr:
            return
        try:
            if self.bridge is not None:
                self.bridge.set_pod_cidr(cidr)
            else:
                # CNI plugins take the range from their own configuration.
                parse_ranges(cidr)
        except InvalidNetworkRequest as exc:
            raise InvalidArgument(f"runtime_config.network_config.pod_cidr: {exc}") from None
        self.db.put_setting(_POD_CIDR_KEY, cidr)

    def status(self) -> RuntimeStatus:
        return RuntimeStatus(
            runtime=self._runtime_readiness(),
            network=self._network_readiness(),
            handlers=sorted(self.settings.handlers),
            user_namespaces=userns_supported(),
            pod_cidr=self.pod_cidr,
        )

    def _runtime_readiness(self) -> Readiness:
        handler = self.settings.handler("")
        for what, path in (("OCI runtime", handler.path), ("conmon", self.settings.conmon_path)):
            if not os.access(path, os.X_OK):
                return Readiness(False, "RuntimeBinaryMissing", f"{what} {path} is not executable")
        return Readiness(True)

    def _network_readiness(self) -> Readiness:
        network = self.network.readiness()
        return Readiness(network.ready, network.reason, network.message)

    def image_fs_usage(self) -> DiskUsage:
        content, layers, _ = self.store_dirs()
        return disk_usage(content, layers)

    def container_fs_usage(self) -> DiskUsage:
        return disk_usage(self.store_dirs()[2])
