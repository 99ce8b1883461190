"""read_interfaces on a real pinned network namespace with a veth pair to the host."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import uuid
from pathlib import Path

from metrics.model import InterfaceStats
from metrics.net_reader import read_interfaces
from network.netns import bring_up_loopback
from runtime.host.namespaces import entered, pin_current, unpin, unshared
from tests.netutil import in_new_thread
from tests.waiting import wait_until

PACKETS = 20
PAYLOAD = 1000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def make_pinned_netns(pin: Path) -> None:
    def build() -> None:
        with unshared(["net"]):
            pin_current("net", pin)
            bring_up_loopback()

    in_new_thread(build)


def by_name(interfaces: list[InterfaceStats] | None) -> dict[str, InterfaceStats]:
    assert interfaces is not None
    return {i.name: i for i in interfaces}


def test_counters_of_the_pod_side_of_a_veth_and_no_loopback(tmp_path: Path) -> None:
    pin = tmp_path / f"net-{uuid.uuid4().hex[:8]}"
    suffix = f"{random.randrange(16**6):06x}"
    host_end, pod_end = f"mnr{suffix}h", f"mnr{suffix}p"
    subnet = f"169.254.{random.randrange(1, 254)}"
    own_netns = os.readlink("/proc/thread-self/ns/net")
    make_pinned_netns(pin)
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        ip("link", "set", pod_end, "netns", str(pin))
        ip("addr", "add", f"{subnet}.1/30", "dev", host_end)
        ip("link", "set", host_end, "up")

        def configure_pod_side() -> None:
            with entered({"net": pin}):
                ip("addr", "add", f"{subnet}.2/30", "dev", pod_end)
                ip("link", "set", pod_end, "up")

        in_new_thread(configure_pod_side)
        quiet = by_name(read_interfaces(str(pin)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(PACKETS):
                sender.sendto(b"x" * PAYLOAD, (f"{subnet}.2", 9))

        def pod_side() -> InterfaceStats:
            return by_name(read_interfaces(str(pin)))[pod_end]

        assert wait_until(lambda: pod_side().rx_packets - quiet[pod_end].rx_packets >= PACKETS, 3)
        seen = pod_side()
        assert set(quiet) == {pod_end}
        assert seen.rx_packets - quiet[pod_end].rx_packets >= PACKETS
        assert seen.rx_bytes - quiet[pod_end].rx_bytes >= PACKETS * PAYLOAD
        assert seen.tx_packets >= 1  # at least the ARP reply
        assert seen.rx_errors == 0 and seen.tx_dropped == 0
        assert os.readlink("/proc/thread-self/ns/net") == own_netns
    finally:
        subprocess.run(["ip", "link", "del", host_end], check=False, capture_output=True)
        unpin(pin)


def test_a_released_or_removed_pin_reads_as_none(tmp_path: Path) -> None:
    pin = tmp_path / "net"
    make_pinned_netns(pin)
    try:
        assert read_interfaces(str(pin)) == []
        # unmounted but the file left behind, as after a crash during teardown
        subprocess.run(["umount", str(pin)], check=True)
        assert read_interfaces(str(pin)) is None
    finally:
        unpin(pin)
    assert read_interfaces(str(pin)) is None
