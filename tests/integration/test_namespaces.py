"""Pinned namespaces and the thread-local namespace switches, on the real kernel."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import TypeVar

from network.netns import bring_up_loopback, is_pinned
from runtime.host.namespaces import entered, pin_current, unpin, unshared
from runtime.settings import RuntimeSettings
from tests.netutil import in_new_thread

T = TypeVar("T")


def ns_inode(kind: str, where: str = "self") -> str:
    return os.readlink(f"/proc/{where}/ns/{kind}")


def test_pinned_namespace_outlives_the_thread_and_the_thread_returns(
    settings: RuntimeSettings,
) -> None:
    pins = {k: settings.layout.pin_path(k, "pod") for k in ("net", "ipc", "uts")}
    host = {k: ns_inode(k) for k in pins}

    def build() -> dict[str, str]:
        with unshared(list(pins)):
            socket.sethostname("pinned-pod")
            for kind, pin in pins.items():
                pin_current(kind, pin)
            inside = {k: ns_inode(k, "thread-self") for k in pins}
        assert {k: ns_inode(k, "thread-self") for k in pins} == host
        return inside

    try:
        inside = in_new_thread(build)
        for kind, pin in pins.items():
            assert is_pinned(pin)
            assert f"[{os.stat(pin).st_ino}]" in inside[kind]
            assert inside[kind] != host[kind]
        hostname = subprocess.run(
            ["nsenter", f"--uts={pins['uts']}", "hostname"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert hostname.stdout.strip() == "pinned-pod"
        assert socket.gethostname() != "pinned-pod"
    finally:
        for pin in pins.values():
            unpin(pin)
    assert not any(p.exists() for p in pins.values())


def test_loopback_comes_up_inside_the_pod_netns_only(settings: RuntimeSettings) -> None:
    pin = settings.layout.pin_path("net", "lo")

    def build() -> None:
        with unshared(["net"]):
            bring_up_loopback()
            pin_current("net", pin)

    try:
        in_new_thread(build)
        link = subprocess.run(
            ["nsenter", f"--net={pin}", "ip", "-o", "link", "show", "lo"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "UP" in link.stdout.split("<")[1].split(">")[0].split(",")
    finally:
        unpin(pin)


def test_entering_a_pin_switches_only_the_calling_thread(settings: RuntimeSettings) -> None:
    pin = settings.layout.pin_path("net", "enter")
    in_new_thread(lambda: _pin_fresh_net(pin))
    try:

        def look() -> tuple[str, str]:
            with entered({"net": pin}):
                inside = ns_inode("net", "thread-self")
            return inside, ns_inode("net", "thread-self")

        inside, after = in_new_thread(look)
        assert inside == f"net:[{os.stat(pin).st_ino}]"
        assert after == ns_inode("net")
    finally:
        unpin(pin)


def _pin_fresh_net(pin: Path) -> None:
    with unshared(["net"]):
        pin_current("net", pin)


def test_unpinning_twice_and_unpinning_a_missing_pin_succeed(settings: RuntimeSettings) -> None:
    pin = settings.layout.pin_path("net", "twice")
    in_new_thread(lambda: _pin_fresh_net(pin))
    unpin(pin)
    unpin(pin)
    unpin(settings.layout.pin_path("net", "never-made"))
    assert not is_pinned(pin)
