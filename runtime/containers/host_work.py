"""What ContainerManager asks of the host, as one small interface: the manager keeps the
locking, cancellation, undo and state, and unit tests give it a fake host instead of the
rootfs, conmon and the OCI runtime.

The methods raise what the real steps raise (OciRuntimeError, ConmonError and its
ContainerCreateError, the domain errors of the build): the manager maps them to the CRI's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from runtime.containers.build import BuiltContainer, ContainerBuilder
from runtime.containers.bundle import (
    container_cgroup_path,
    exec_process_spec,
    read_spec,
    release_volume_mounts,
    remove_files,
    update_spec_resources,
)
from runtime.containers.model import Container, ImageRuntimeConfig
from runtime.host.cgroups import CgroupLayout
from runtime.oci.conmon import ConmonProcess, ExecResult, create_container, exec_sync, reopen_log
from runtime.oci.runtime_cli import OciRuntime
from runtime.oci.seccomp_bpf import SeccompFilters
from runtime.pods.model import Sandbox
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore
from runtime.state.db import written_ahead


class ContainerHost(Protocol):
    async def build(
        self,
        container: Container,
        sandbox: Sandbox,
        image_config: ImageRuntimeConfig,
        lowers: list[Path],
        volumes: dict[int, list[Path]],
    ) -> BuiltContainer:
        """The rootfs and the bundle's spec; on failure no files are left."""
        ...

    async def create(self, container: Container) -> ConmonProcess:
        """The runtime's create under a new conmon, then the host's copies of the staged
        mounts detached; conmon leaves nothing when the runtime refuses."""
        ...

    async def created(self, container: Container) -> None:
        """After the runtime's successful create: whatever later creates may reuse from it."""
        ...

    async def start(self, container: Container) -> None: ...

    async def kill(self, container: Container, signum: int, *, all_processes: bool) -> None: ...

    async def delete(self, container: Container) -> None:
        """Forced; idempotent, and a no-op for a handler no longer configured."""
        ...

    async def remove_files(self, container_id: str, sandbox: Sandbox | None) -> None:
        """Rootfs, bundle, exit and attach files, and the cgroup if the pod is known;
        idempotent, as it also runs on half-created containers."""
        ...

    async def update(self, container: Container, resources: dict[str, Any]) -> None:
        """Apply OCI linux.resources; a refusal leaves the old limits in place."""
        ...

    async def reopen_log(self, container: Container) -> None: ...

    async def exec_sync(
        self, container: Container, command: list[str], timeout_s: float, output_cap: int
    ) -> ExecResult: ...

    def oom_kills(self, cgroup_path: str) -> int: ...


class KernelContainerHost:
    def __init__(
        self,
        settings: RuntimeSettings,
        cgroups: CgroupLayout,
        store: ContainerStore,
        runtimes: dict[str, OciRuntime],
    ) -> None:
        self.settings = settings
        self.layout = settings.layout
        self.cgroups = cgroups
        self.runtimes = runtimes
        self.builder = ContainerBuilder(settings, cgroups, store)
        self._filters = {
            name: SeccompFilters(runtime.binary)
            for name, runtime in runtimes.items()
            if runtime.binary.name == "crun"
        }

    async def build(
        self,
        container: Container,
        sandbox: Sandbox,
        image_config: ImageRuntimeConfig,
        lowers: list[Path],
        volumes: dict[int, list[Path]],
    ) -> BuiltContainer:
        # The CREATING row first: after a crash, recovery finds what this makes by it.
        await written_ahead()
        filters = self._filters.get(container.runtime_handler)
        return await asyncio.to_thread(
            self.builder.build, container, sandbox, image_config, lowers, filters, volumes
        )

    async def create(self, container: Container) -> ConmonProcess:
        paths = self.layout.container(container.id)
        config = container.config
        process = await create_container(
            self.settings.conmon_path,
            self.runtimes[container.runtime_handler],
            container_id=container.id,
            bundle=paths.bundle,
            log_path=Path(container.log_path) if container.log_path else None,
            exit_dir=self.layout.exits_dir,
            socket_dir=self.layout.attach_dir,
            tty=config.tty,
            stdin=config.stdin,
            stdin_once=config.stdin_once,
        )
        await asyncio.to_thread(release_volume_mounts, paths)
        return process

    async def created(self, container: Container) -> None:
        filters = self._filters.get(container.runtime_handler)
        if filters is not None:
            state_dir = self.runtimes[container.runtime_handler].state_root / container.id
            await asyncio.to_thread(self._learn, filters, container.id, state_dir)

    def _learn(self, filters: SeccompFilters, container_id: str, state_dir: Path) -> None:
        filters.learn(read_spec(self.layout.container(container_id)), state_dir)

    async def start(self, container: Container) -> None:
        await self.runtimes[container.runtime_handler].start(container.id)

    async def kill(self, container: Container, signum: int, *, all_processes: bool) -> None:
        runtime = self.runtimes[container.runtime_handler]
        await runtime.kill(container.id, signum, all_processes=all_processes)

    async def delete(self, container: Container) -> None:
        runtime = self.runtimes.get(container.runtime_handler)
        if runtime is not None:
            await runtime.delete(container.id, force=True)

    async def remove_files(self, container_id: str, sandbox: Sandbox | None) -> None:
        await asyncio.to_thread(self._remove_files, container_id, sandbox)

    def _remove_files(self, container_id: str, sandbox: Sandbox | None) -> None:
        remove_files(self.layout.container(container_id))
        self.layout.exit_file(container_id).unlink(missing_ok=True)
        self.layout.attach_link(container_id).unlink(missing_ok=True)
        if sandbox is not None:
            self.cgroups.remove(container_cgroup_path(sandbox.cgroup_path, container_id))

    async def update(self, container: Container, resources: dict[str, Any]) -> None:
        if not container.conmon_pid:
            # Not in the runtime yet: the limits wait in the spec its create will read.
            await asyncio.to_thread(
                update_spec_resources, self.layout.container(container.id), resources
            )
            return
        await self.runtimes[container.runtime_handler].update(container.id, resources)

    async def reopen_log(self, container: Container) -> None:
        log_path = Path(container.log_path) if container.log_path else None
        await asyncio.to_thread(reopen_log, self.layout.container(container.id).ctl, log_path)

    async def exec_sync(
        self, container: Container, command: list[str], timeout_s: float, output_cap: int
    ) -> ExecResult:
        paths = self.layout.container(container.id)
        process = await asyncio.to_thread(exec_process_spec, paths, command)
        return await exec_sync(
            self.settings.conmon_path,
            self.runtimes[container.runtime_handler],
            container_id=container.id,
            bundle=paths.bundle,
            process_spec=process,
            timeout_s=timeout_s,
            output_cap=output_cap,
        )

    def oom_kills(self, cgroup_path: str) -> int:
        return self.cgroups.oom_kills(cgroup_path)
