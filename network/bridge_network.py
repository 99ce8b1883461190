"""The built-in bridge network: host-local IPAM, a veth per pod, masquerade and hostPorts.

Addresses and hostPorts are claimed on the event loop thread, so concurrent RunPodSandbox
calls never hand out the same one; the kernel work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import structlog

from network import bridge
from network.errors import HostPortInUse, InvalidNetworkRequest, NetworkError
from network.ipam import AddressPool, AllocationLedger, IPNetwork, PodAddress, parse_ranges
from network.iptables import PodRules
from network.types import (
    HostPort,
    NetworkReadiness,
    PodNetworkRequest,
    PodNetworkStatus,
)

log = structlog.get_logger("moorage.network")

_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class BridgeSettings:
    bridge: str = "moorage0"
    mtu: int = 1500
    chain_prefix: str = "MOORAGE"


class BridgeNetwork:
    def __init__(self, settings: BridgeSettings, pod_cidr: str, ledger: AllocationLedger) -> None:
        self.settings = settings
        self.rules = PodRules(settings.chain_prefix, settings.bridge)
        self._pool = AddressPool(parse_ranges(pod_cidr), ledger)
        # (protocol, host_ip, host_port) -> the sandbox holding it.
        self._ports: dict[tuple[str, str, int], str] = {}
        self._host_lock = threading.Lock()
        self._host_ready_for: tuple[IPNetwork, ...] | None = None
        self._host_error = ""

    @property
    def networks(self) -> list[IPNetwork]:
        return list(self._pool.networks)

    def set_pod_cidr(self, cidr: str) -> None:
        """Take new ranges for new pods; pods keep the addresses they have."""
        self._pool.networks = parse_ranges(cidr)

    def readiness(self) -> NetworkReadiness:
        if self._host_error:
            return NetworkReadiness(False, "NetworkPluginNotReady", self._host_error)
        return NetworkReadiness(True)

    async def prepare(self) -> None:
        """Set the bridge and base rules up before the first pod asks."""
        await asyncio.to_thread(self._ensure_host)

    async def attach(self, pod: PodNetworkRequest) -> PodNetworkStatus:
        ports = published_ports(pod.host_ports)
        self.claim_host_ports(pod.sandbox_id, ports)
        try:
            addresses = self._pool.allocate(pod.sandbox_id)
            await asyncio.to_thread(self._attach, pod, addresses, ports)
        except BaseException:
            self.release_pod(pod.sandbox_id)
            raise
        return PodNetworkStatus([str(a.address) for a in addresses])

    async def detach(self, pod: PodNetworkRequest) -> None:
        await asyncio.to_thread(self._detach, pod.sandbox_id, bool(published_ports(pod.host_ports)))
        self.release_pod(pod.sandbox_id)

    async def reconcile(self, live: list[PodNetworkRequest]) -> list[str]:
        fixed: list[str] = []
        live_ids = {p.sandbox_id for p in live}
        for pod in live:
            self.claim_host_ports(pod.sandbox_id, published_ports(pod.host_ports))
        for owner in self._pool.owners() - live_ids:
            self._pool.release(owner)
            fixed.append(f"released the addresses of gone sandbox {owner}")
        fixed += await asyncio.to_thread(self._remove_stale, live_ids)
        return fixed

    def claim_host_ports(self, sandbox_id: str, ports: Sequence[HostPort]) -> None:
        wanted = [(p.protocol, p.host_ip, p.host_port) for p in ports]
        for protocol, host_ip, port in wanted:
            for (held_proto, held_ip, held_port), holder in self._ports.items():
                clash = held_ip == host_ip or "" in (held_ip, host_ip)
                if (held_proto, held_port) == (protocol, port) and clash and holder != sandbox_id:
                    where = f"{host_ip or '*'}:{port}/{protocol}"
                    raise HostPortInUse(f"hostPort {where} is already held by sandbox {holder}")
        for key in wanted:
            self._ports[key] = sandbox_id

    def release_pod(self, sandbox_id: str) -> None:
        self._pool.release(sandbox_id)
        for key in [k for k, holder in self._ports.items() if holder == sandbox_id]:
            del self._ports[key]

    def _ensure_host(self) -> None:
        networks = tuple(self.networks)
        with self._host_lock:
            if self._host_ready_for == networks:
                return
            try:
                bridge.ensure_bridge(self.settings.bridge, networks, self.settings.mtu)
                self.rules.ensure_base(networks)
            except (OSError, NetworkError) as exc:
                self._host_error = f"bridge {self.settings.bridge} could not be set up: {exc}"
                raise NetworkError(self._host_error) from None
            self._host_ready_for = networks
            self._host_error = ""

    def _attach(
        self, pod: PodNetworkRequest, addresses: list[PodAddress], ports: Sequence[HostPort]
    ) -> None:
        self._ensure_host()
        with ExitStack() as undo:
            try:
                bridge.attach_pod(
                    self.settings.bridge,
                    pod.sandbox_id,
                    Path(pod.netns_path),
                    addresses,
                    self.settings.mtu,
                )
            except OSError as exc:
                bridge.detach_pod(pod.sandbox_id)
                raise NetworkError(f"pod network of {pod.sandbox_id}: {exc}") from None
            undo.callback(bridge.detach_pod, pod.sandbox_id)
            if ports:
                versions = sorted({a.address.version for a in addresses})
                undo.callback(self.rules.remove_hostports, pod.sandbox_id, versions)
                for address in addresses:
                    self.rules.add_hostports(pod.sandbox_id, str(address.address), ports)
            undo.pop_all()

    def _detach(self, sandbox_id: str, has_host_ports: bool) -> None:
        # Reading the nat table costs a few ms; pods without hostPorts have no rules there
        # (and recovery sweeps any chain a crash left behind).
        if has_host_ports:
            versions = sorted({n.version for n in self.networks})
            self.rules.remove_hostports(sandbox_id, versions)
        bridge.detach_pod(sandbox_id)

    def _remove_stale(self, live_ids: set[str]) -> list[str]:
        fixed: list[str] = []
        live_veths = {bridge.host_veth_name(i) for i in live_ids}
        for name in bridge.pod_veths_on(self.settings.bridge):
            if name not in live_veths:
                bridge.delete_link(name)
                fixed.append(f"deleted stale veth {name}")
        for version in sorted({n.version for n in self.networks}):
            for suffix in self.rules.pods_with_hostports(version):
                if not any(i.startswith(suffix) for i in live_ids):
                    self.rules.remove_hostports(suffix, [version])
                    fixed.append(f"removed stale hostPort rules {suffix}")
        return fixed


def published_ports(ports: Sequence[HostPort]) -> list[HostPort]:
    """The mappings that publish a port (hostPort 0 publishes nothing, as in kubelet)."""
    published = []
    for port in ports:
        if port.host_port == 0:
            continue
        if port.protocol not in _PROTOCOLS:
            raise InvalidNetworkRequest(f"port mapping protocol {port.protocol!r} is unknown")
        if not (0 < port.host_port < 65536 and 0 < port.container_port < 65536):
            raise InvalidNetworkRequest(
                f"port mapping {port.host_port}->{port.container_port} is out of range"
            )
        published.append(port)
    return published
