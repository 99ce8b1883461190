"""Host-local IPAM: each pod gets one address per configured range, never one already held.

Allocation runs on the event loop thread, so two concurrent RunPodSandbox calls can never
pick the same address; the ledger (state.db) records every claim before the pod uses it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from network.errors import AddressesExhausted, InvalidNetworkRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A /64 holds more addresses than any node will hand out; scanning stops here.
_MAX_SCAN = 1 << 20


class AllocationLedger(Protocol):
    def allocations(self) -> dict[str, str]:
        """Every claimed address -> its owner (a sandbox id)."""
        ...

    def claim(self, address: str, owner: str) -> None: ...

    def release(self, owner: str) -> None: ...


@dataclass(frozen=True)
class PodAddress:
    address: IPAddress
    network: IPNetwork
    gateway: IPAddress


def parse_ranges(cidrs: str) -> list[IPNetwork]:
    """One CIDR, or an IPv4 and an IPv6 one separated by a comma (dual stack)."""
    networks: list[IPNetwork] = []
    for part in (p.strip() for p in cidrs.split(",")):
        try:
            network = ipaddress.ip_network(part, strict=True)
        except ValueError as exc:
            raise InvalidNetworkRequest(f"pod CIDR {part!r}: {exc}") from None
        if network.num_addresses < 4:
            raise InvalidNetworkRequest(f"pod CIDR {part!r} is too small for pods and a gateway")
        networks.append(network)
    families = [n.version for n in networks]
    if len(networks) > 2 or len(set(families)) != len(families):
        raise InvalidNetworkRequest(
            f"pod CIDR {cidrs!r}: give one range, or one IPv4 and one IPv6 range"
        )
    for a in networks:
        for b in networks:
            if a is not b and a.overlaps(b):
                raise InvalidNetworkRequest(f"pod CIDRs {a} and {b} overlap")
    return networks


def gateway_of(network: IPNetwork) -> IPAddress:
    return network.network_address + 1


class AddressPool:
    """Addresses of the pod ranges, handed out round-robin so a freed one rests a while."""

    def __init__(self, networks: Iterable[IPNetwork], ledger: AllocationLedger) -> None:
        self.networks = list(networks)
        self._ledger = ledger
        self._held: dict[IPAddress, str] = {
            ipaddress.ip_address(a): owner for a, owner in ledger.allocations().items()
        }
        self._last: dict[IPNetwork, IPAddress] = {}

    def owners(self) -> set[str]:
        return set(self._held.values())

    def addresses_of(self, owner: str) -> list[IPAddress]:
        return [a for a, o in self._held.items() if o == owner]

    def allocate(self, owner: str) -> list[PodAddress]:
        """One address per range for `owner`, or the ones it already holds."""
        held = self.addresses_of(owner)
        result: list[PodAddress] = []
        try:
            for network in self.networks:
                mine = [a for a in held if a in network]
                address = mine[0] if mine else self._claim(network, owner)
                result.append(PodAddress(address, network, gateway_of(network)))
        except AddressesExhausted:
            self.release(owner)
            raise
        return result

    def release(self, owner: str) -> None:
        mine = self.addresses_of(owner)
        if not mine:
            return
        self._ledger.release(owner)
        for address in mine:
            del self._held[address]

    def _claim(self, network: IPNetwork, owner: str) -> IPAddress:
        first = int(network.network_address) + 2
        # IPv4 keeps its broadcast address free.
        last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
        size = last - first + 1
        previous = self._last.get(network)
        start = int(previous) + 1 - first if previous is not None else 0
        for step in range(min(size, _MAX_SCAN)):
            candidate = ipaddress.ip_address(first + (start + step) % size)
            if candidate not in self._held:
                self._ledger.claim(str(candidate), owner)
                self._held[candidate] = owner
                self._last[network] = candidate
                return candidate
        raise AddressesExhausted(f"no free address left in pod range {network}")
