"""What SandboxManager asks of the host, as one small interface: the manager keeps the
locking, cancellation and undo, and unit tests give it a fake host instead of the kernel."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from typing import Protocol

from network.types import PodNetwork, PodNetworkRequest
from runtime.host.cgroup_limits import apply_limits
from runtime.host.cgroups import CgroupLayout
from runtime.pods.model import InfraProcess, Sandbox
from runtime.pods.setup import build_sandbox, remove_sandbox, stop_sandbox
from runtime.pods.userns import supported as userns_supported
from runtime.resources import Resources
from runtime.settings import RuntimeSettings
from runtime.state.db import written_ahead


@dataclass(frozen=True)
class SandboxObjects:
    """What a built sandbox's row records, so recovery finds the pins and the infra."""

    pins: dict[str, str]
    infra: InfraProcess | None


class SandboxHost(Protocol):
    def user_namespaces_supported(self) -> bool: ...

    async def build(self, sandbox: Sandbox, sysctl_paths: dict[str, str]) -> SandboxObjects:
        """Directories, cgroup, /dev/shm, namespaces and infra; on failure nothing is left."""
        ...

    async def attach_network(self, request: PodNetworkRequest) -> list[str]:
        """The pod's addresses; on failure undo what was done and raise NetworkError."""
        ...

    async def detach_network(self, request: PodNetworkRequest) -> None:
        """Idempotent: also for pods whose network is half built or already gone."""
        ...

    async def update_resources(self, sandbox: Sandbox, limits: Resources) -> None:
        """Write the limits into the pod cgroup; a refusal leaves the old ones in force."""
        ...

    async def stop(self, sandbox: Sandbox) -> None:
        """End the infra, release /dev/shm and the pins; idempotent."""
        ...

    async def remove(self, sandbox: Sandbox) -> None:
        """Stop, then remove the cgroup and the directories; idempotent."""
        ...


class KernelSandboxHost:
    def __init__(
        self, settings: RuntimeSettings, cgroups: CgroupLayout, network: PodNetwork
    ) -> None:
        self.settings = settings
        self.cgroups = cgroups
        self.network = network
        # Only while this agent process is the infra's parent and must reap it.
        self._infra_children: dict[str, subprocess.Popen[bytes]] = {}

    def user_namespaces_supported(self) -> bool:
        return userns_supported()

    async def build(self, sandbox: Sandbox, sysctl_paths: dict[str, str]) -> SandboxObjects:
        # The CREATING row first: after a crash, recovery finds what this makes by it.
        await written_ahead()
        built = await asyncio.to_thread(
            build_sandbox, self.settings, self.cgroups, sandbox, sysctl_paths
        )
        if built.infra_child is not None:
            self._infra_children[sandbox.id] = built.infra_child
        return SandboxObjects(built.pins, built.infra)

    async def attach_network(self, request: PodNetworkRequest) -> list[str]:
        status = await self.network.attach(request)
        return status.ips

    async def detach_network(self, request: PodNetworkRequest) -> None:
        await self.network.detach(request)

    async def update_resources(self, sandbox: Sandbox, limits: Resources) -> None:
        await asyncio.to_thread(apply_limits, self.cgroups, sandbox.cgroup_path, limits)

    async def stop(self, sandbox: Sandbox) -> None:
        child = self._infra_children.get(sandbox.id)
        await asyncio.to_thread(stop_sandbox, self.settings, sandbox, child)
        self._infra_children.pop(sandbox.id, None)

    async def remove(self, sandbox: Sandbox) -> None:
        child = self._infra_children.get(sandbox.id)
        await asyncio.to_thread(remove_sandbox, self.settings, self.cgroups, sandbox, child)
        self._infra_children.pop(sandbox.id, None)
