"""The node's bridge and each pod's veth pair, through pyroute2 netlink (blocking calls).

The pod end of the veth is created directly inside the pod's netns (measured: ~10x faster
than creating it on the host and moving it), then configured from a thread that entered
that netns.

pyroute2 is imported by the functions that use it: the package costs ~8 MB and ~0.15 s at
start, and a restarted agent answers calls before it touches the bridge.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from network.ipam import IPNetwork, PodAddress, gateway_of
from network.netns import in_netns

POD_IFNAME = "eth0"
HOST_VETH_PREFIX = "mr"
# IFA_F_NODAD: the gateway must answer at once, not after duplicate address detection.
_IFA_F_NODAD = 0x02


def host_veth_name(sandbox_id: str) -> str:
    """The host end of a pod's veth: IFNAMSIZ leaves 15 characters."""
    return HOST_VETH_PREFIX + sandbox_id[:13]


def ensure_bridge(name: str, networks: Sequence[IPNetwork], mtu: int) -> None:
    """Create the bridge if needed, up, holding the gateway of every pod range."""
    with _iproute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            with contextlib.suppress(_netlink_error()):
                ipr.link("add", ifname=name, kind="bridge")
            found = ipr.link_lookup(ifname=name)
        (index,) = found
        ipr.link("set", index=index, state="up", mtu=mtu)
        present = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
        for network in networks:
            gateway = str(gateway_of(network))
            if (gateway, network.prefixlen) not in present:
                ipr.addr(
                    "add",
                    index=index,
                    address=gateway,
                    prefixlen=network.prefixlen,
                    flags=_IFA_F_NODAD,
                )
    _write_sysctl("net/ipv4/ip_forward", "1")
    # Lets DNAT send 127.0.0.1:hostPort traffic out through the bridge to a pod.
    _write_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    if any(n.version == 6 for n in networks):
        _write_sysctl("net/ipv6/conf/all/forwarding", "1")


def attach_pod(
    bridge: str, sandbox_id: str, netns_pin: Path, addresses: Sequence[PodAddress], mtu: int
) -> None:
    """veth pair (host end on the bridge, eth0 in the pod), addresses and default routes."""
    host_name = host_veth_name(sandbox_id)
    netns_fd = os.open(netns_pin, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _iproute() as ipr:
            (bridge_index,) = ipr.link_lookup(ifname=bridge)
            ipr.link(
                "add",
                ifname=host_name,
                kind="veth",
                mtu=mtu,
                peer={"ifname": POD_IFNAME, "net_ns_fd": netns_fd, "mtu": mtu},
            )
            (host_index,) = ipr.link_lookup(ifname=host_name)
            ipr.link("set", index=host_index, master=bridge_index, state="up")
    finally:
        os.close(netns_fd)
    # Hairpin: a pod reaching its own hostPort gets the reply back through the same port.
    Path(f"/sys/class/net/{host_name}/brport/hairpin_mode").write_text("1")
    with in_netns(netns_pin), _iproute() as ipr:
        (index,) = ipr.link_lookup(ifname=POD_IFNAME)
        for address in addresses:
            ipr.addr(
                "add",
                index=index,
                address=str(address.address),
                prefixlen=address.network.prefixlen,
                flags=_IFA_F_NODAD,
            )
        ipr.link("set", index=index, state="up")
        for address in addresses:
            family = 2 if address.address.version == 4 else 10
            ipr.route("add", dst="default", gateway=str(address.gateway), family=family)


def detach_pod(sandbox_id: str) -> bool:
    """Delete the pod's veth pair (both ends go); False when it was already gone."""
    with _iproute() as ipr:
        try:
            ipr.link("del", ifname=host_veth_name(sandbox_id))
        except _netlink_error() as exc:
            if exc.code == errno.ENODEV:
                return False
            raise
    return True


def pod_veths_on(bridge: str) -> list[str]:
    """Names of the host ends of pod veths attached to the bridge."""
    with _iproute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return []
        return [
            link.get_attr("IFLA_IFNAME")
            for link in ipr.get_links(master=found[0])
            if link.get_attr("IFLA_IFNAME", "").startswith(HOST_VETH_PREFIX)
        ]


def delete_link(name: str) -> None:
    with _iproute() as ipr, contextlib.suppress(_netlink_error()):
        ipr.link("del", ifname=name)


def _iproute() -> Any:
    from pyroute2 import IPRoute  # noqa: PLC0415  (imported on first use: module docstring)

    return IPRoute()


def _netlink_error() -> Any:
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415  (as _iproute)

    return NetlinkError


def _write_sysctl(relative: str, value: str) -> None:
    path = Path("/proc/sys") / relative
    if path.read_text().strip() != value:
        path.write_text(value)
