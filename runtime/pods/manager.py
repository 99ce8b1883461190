"""Pod sandbox lifecycle: the async edge over the blocking steps in pods/setup.py.

Mutations are shielded from the caller's cancellation: once kubelet's deadline passes, the
pod is still either fully built (and kept, so a retry finds the name reserved) or fully
undone; never half of each. On shutdown, drain() lets the ones under way finish.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import structlog

from network.errors import NetworkError
from network.types import HostPort, PodNetworkRequest
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.host.cgroups import pod_cgroup_path
from runtime.in_flight import InFlight, KeyedLocks
from runtime.pods.host_work import SandboxHost
from runtime.pods.model import (
    NamespaceMode,
    PodResources,
    Sandbox,
    SandboxConfig,
    SandboxFilter,
    SandboxState,
)
from runtime.pods.pod_limits import pod_cgroup_limits
from runtime.pods.sysctls import validate_sysctls
from runtime.resource_limits import check_resources
from runtime.settings import RuntimeSettings
from runtime.state.sandbox_store import SandboxStore

log = structlog.get_logger("moorage.sandbox")

# Linux's HOST_NAME_MAX.
MAX_HOSTNAME_BYTES = 64


class SandboxManager:
    def __init__(
        self,
        settings: RuntimeSettings,
        store: SandboxStore,
        host: SandboxHost,
    ) -> None:
        self.settings = settings
        self.store = store
        self.host = host
        self._locks = KeyedLocks()
        self._in_flight = InFlight()

    async def run(self, config: SandboxConfig) -> Sandbox:
        return await self._in_flight.run(self._run(config))

    async def stop(self, id_or_prefix: str) -> None:
        await self._in_flight.run(self._stop(id_or_prefix))

    async def remove(self, id_or_prefix: str) -> None:
        await self._in_flight.run(self._remove(id_or_prefix))

    async def update_resources(self, id_or_prefix: str, resources: PodResources) -> Sandbox:
        return await self._in_flight.run(self._update_resources(id_or_prefix, resources))

    async def drain(self) -> None:
        """Wait for every mutation under way, even those whose caller went away."""
        await self._in_flight.drain()

    def status(self, id_or_prefix: str) -> Sandbox:
        return self.store.get(id_or_prefix)

    def select(self, flt: SandboxFilter | None = None) -> list[Sandbox]:
        return self.store.select(flt)

    def find(self, id_or_prefix: str) -> Sandbox | None:
        return self.store.find(id_or_prefix)

    def all(self) -> list[Sandbox]:
        """Every row, half-built ones included, copied in one step: a metrics scrape calls
        this from its own thread while the event loop changes the store."""
        return self.store.all()

    def _new_sandbox(self, config: SandboxConfig) -> Sandbox:
        handler = config.runtime_handler or self.settings.default_handler
        if handler not in self.settings.handlers:
            raise NotFound(
                f"runtime handler {handler!r} is not configured "
                f"(configured: {', '.join(sorted(self.settings.handlers))})"
            )
        if len(config.hostname.encode()) > MAX_HOSTNAME_BYTES or "\0" in config.hostname:
            raise InvalidArgument(
                f"config.hostname {config.hostname!r} is not a valid hostname "
                f"(at most {MAX_HOSTNAME_BYTES} bytes)"
            )
        ns = config.namespaces
        for field_name, mode in (("network", ns.network), ("ipc", ns.ipc), ("pid", ns.pid)):
            if mode is NamespaceMode.TARGET:
                raise InvalidArgument(
                    f"linux.security_context.namespace_options.{field_name}: "
                    "TARGET is only valid for containers"
                )
        if ns.user is not None:
            if not self.host.user_namespaces_supported():
                raise FailedPrecondition(
                    "this node cannot give pods user namespaces (they need kernel 5.19 or "
                    "later and user.max_user_namespaces > 0)"
                )
            # The node's network is fine: containers join it from the pod's user namespace
            # (with the node's /sys bound, see runtime/oci/mounts.py). The node's IPC and PID
            # namespaces are not the user namespace's, so /dev/mqueue and /proc could not be.
            shared = [
                name
                for name, mode in (("ipc", ns.ipc), ("pid", ns.pid))
                if mode is NamespaceMode.NODE
            ]
            if shared:
                raise InvalidArgument(
                    "linux.security_context.namespace_options: a pod with its own user "
                    f"namespace cannot share the node's {', '.join(shared)} namespace"
                )
        sandbox_id = secrets.token_hex(32)
        paths = self.settings.layout.sandbox(sandbox_id)
        parent = config.cgroup_parent or self.settings.default_cgroup_parent
        return Sandbox(
            id=sandbox_id,
            config=replace(config, runtime_handler=handler),
            state=SandboxState.CREATING,
            created_at_ns=time.time_ns(),
            runtime_handler=handler,
            cgroup_path=pod_cgroup_path(self.settings.cgroup_driver, parent, sandbox_id),
            shm_path="" if ns.ipc is NamespaceMode.NODE else str(paths.shm),
            resolv_conf_path=str(paths.resolv_conf),
        )

    async def _run(self, config: SandboxConfig) -> Sandbox:
        sysctl_paths = validate_sysctls(config.sysctls, config.namespaces)
        sandbox = self._new_sandbox(config)
        self.store.reserve(sandbox)
        bound = log.bind(sandbox_id=sandbox.id, sandbox_name=sandbox.name)
        started = time.perf_counter()
        try:
            built = await self.host.build(sandbox, sysctl_paths)
        except BaseException:
            self.store.delete(sandbox.id)
            raise
        sandbox = replace(sandbox, pins=built.pins, infra=built.infra)
        try:
            ips = await self._attach_network(sandbox)
            ready = self.store.update(
                sandbox.id, lambda _: replace(sandbox, state=SandboxState.READY, ips=ips)
            )
        except BaseException:
            try:
                await self._detach_network(sandbox)
            except NetworkError as exc:
                # The attach undid its own work before raising; this pass only catches what a
                # cancellation left. Its failure must not keep the namespaces, cgroup and row.
                bound.warning("network teardown after a failed run", error=str(exc))
            await self.host.remove(sandbox)
            self.store.delete(sandbox.id)
            raise
        bound.info(
            "sandbox ready",
            ips=ips,
            infra_pid=built.infra.pid if built.infra else None,
            build_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return ready

    def network_request(self, sandbox: Sandbox) -> PodNetworkRequest:
        md = sandbox.config.metadata
        netns = sandbox.netns_path
        return PodNetworkRequest(
            sandbox_id=sandbox.id,
            pod_name=md.name,
            pod_namespace=md.namespace,
            pod_uid=md.uid,
            netns_path=netns if netns and Path(netns).exists() else "",
            host_ports=[
                HostPort(p.protocol.value, p.container_port, p.host_port, p.host_ip)
                for p in sandbox.config.port_mappings
            ],
        )

    async def _attach_network(self, sandbox: Sandbox) -> list[str]:
        if sandbox.config.namespaces.network is NamespaceMode.NODE:
            return []
        return await self.host.attach_network(self.network_request(sandbox))

    async def _detach_network(self, sandbox: Sandbox) -> None:
        """Idempotent: also called on pods whose network is half built or already gone."""
        if sandbox.config.namespaces.network is not NamespaceMode.NODE:
            await self.host.detach_network(self.network_request(sandbox))

    async def _stop(self, id_or_prefix: str) -> None:
        async with self._locked(id_or_prefix) as sandbox:
            if sandbox is None:
                return
            await self._detach_network(sandbox)
            await self.host.stop(sandbox)
            if sandbox.state is not SandboxState.NOTREADY:
                self.store.update(sandbox.id, lambda s: replace(s, state=SandboxState.NOTREADY))
                log.info("sandbox stopped", sandbox_id=sandbox.id)

    async def _remove(self, id_or_prefix: str) -> None:
        async with self._locked(id_or_prefix) as sandbox:
            if sandbox is None:
                return
            await self._detach_network(sandbox)
            await self.host.remove(sandbox)
            self.store.delete(sandbox.id)
            log.info("sandbox removed", sandbox_id=sandbox.id)

    async def _update_resources(self, id_or_prefix: str, resources: PodResources) -> Sandbox:
        check_resources(resources.resources, "resources")
        check_resources(resources.overhead, "overhead")
        limits = pod_cgroup_limits(resources)
        check_resources(limits, "resources+overhead")
        async with self._locked(id_or_prefix) as sandbox:
            if sandbox is None:
                raise NotFound(f"pod sandbox {id_or_prefix!r} not found")
            if sandbox.state is not SandboxState.READY:
                # A stopped pod's cgroup may be gone already; a new one starts from RunPodSandbox.
                raise FailedPrecondition(
                    f"pod sandbox {sandbox.id} is {sandbox.state.value}: nothing to update"
                )
            await self.host.update_resources(sandbox, limits)
            log.info("sandbox resources updated", sandbox_id=sandbox.id)
            return self.store.update(sandbox.id, lambda s: replace(s, resources=resources))

    @contextlib.asynccontextmanager
    async def _locked(self, id_or_prefix: str) -> AsyncIterator[Sandbox | None]:
        """The sandbox under its lock, looked up again once the lock is held; None if gone."""
        found = self.store.find(id_or_prefix)
        if found is None:
            yield None
            return
        async with self._locks.held(found.id):
            yield self.store.find(found.id)
