"""What the runtime tells the network layer about a pod, and what it gets back.

Both modes (the built-in bridge and CNI) implement PodNetwork, so the runtime does not care
which one a node uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class HostPort:
    protocol: str  # "tcp", "udp" or "sctp"
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class PodNetworkRequest:
    sandbox_id: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    # The pinned network namespace; "" when it is already gone (a teardown after a reboot).
    netns_path: str
    host_ports: list[HostPort] = field(default_factory=list)


@dataclass(frozen=True)
class PodNetworkStatus:
    # The pod's addresses, primary first (IPv4 before IPv6 on a dual-stack node).
    ips: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NetworkReadiness:
    ready: bool
    reason: str = ""
    message: str = ""


class PodNetwork(Protocol):
    def readiness(self) -> NetworkReadiness: ...

    async def prepare(self) -> None:
        """Set the host side up once, before the first pod (may raise NetworkError)."""
        ...

    async def attach(self, pod: PodNetworkRequest) -> PodNetworkStatus:
        """Wire the pod up; on failure undo what was done and raise NetworkError."""
        ...

    async def detach(self, pod: PodNetworkRequest) -> None:
        """Take the pod's network down; succeeds when it is already gone."""
        ...

    async def reconcile(self, live: list[PodNetworkRequest]) -> list[str]:
        """After a restart: drop whatever belongs to no live pod; one line per fix."""
        ...
