"""CNI mode on the real kernel, driving Debian's containernetworking-plugins from /usr/lib/cni.

Each test gets a network of its own: a bridge `mrc` + 6 hex characters, a random
10.123.x.0/24, a network name that every plugin rule carries in its comment, and pod netns
pinned under a temporary directory. Teardown removes all of it, plugin rules included, even
when a test fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from network.cni import CniNetwork, CniPluginError, CniSettings
from network.errors import NetworkNotReady
from network.netns import bring_up_loopback
from network.types import HostPort, PodNetworkRequest
from runtime.host.namespaces import pin_current, unpin, unshared
from tests.cni_plugins import remove_plugin_rules, rule_marker, standard_plugins
from tests.netutil import REPLY, fetch, free_port, in_new_thread, node_ipv4, pod_listener
from tests.waiting import wait_until

DEBIAN_CNI_BIN = Path("/usr/lib/cni")
T = TypeVar("T")


# ---------------------------------------------------------------- helpers


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


def link_exists(name: str) -> bool:
    return run("ip", "link", "show", name).returncode == 0


def iptables_lines(marker: str) -> list[str]:
    saved = run("iptables-save").stdout
    return [line for line in saved.splitlines() if marker in line]


def pod_can_ping(pin: Path, address: str) -> bool:
    ping = run("nsenter", f"--net={pin}", "busybox", "ping", "-c1", "-W1", address)
    return ping.returncode == 0


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for (the slow) PID 1 to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


# ---------------------------------------------------------------- the test network


@dataclass
class CniTestNet:
    root: Path
    tag: str
    subnet: ipaddress.IPv4Network
    pins: list[Path] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"mrc{self.tag}"

    @property
    def name(self) -> str:
        return f"mrc-{self.tag}"

    @property
    def gateway(self) -> str:
        return str(self.subnet[1])

    @property
    def conf_dir(self) -> Path:
        return self.root / "net.d"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def fake_bin(self) -> Path:
        return self.root / "bin"

    def settings(self, **changes: Any) -> CniSettings:
        base = CniSettings(
            conf_dir=self.conf_dir,
            bin_dirs=(self.fake_bin, DEBIAN_CNI_BIN),
            cache_dir=self.cache_dir,
            plugin_timeout_s=10.0,
        )
        return replace(base, **changes)

    def plugins(self, *extra: dict[str, Any]) -> list[dict[str, Any]]:
        """The standard chain with extra plugins before portmap, and loopback last."""
        bridge, portmap = standard_plugins(self.bridge, str(self.subnet), str(self.ipam_dir))
        return [bridge, *extra, portmap, {"type": "loopback"}]

    def write_conflist(self, plugins: list[dict[str, Any]] | None = None) -> Path:
        path = self.conf_dir / "10-moorage-test.conflist"
        document = {"cniVersion": "1.0.0", "name": self.name, "plugins": plugins or self.plugins()}
        path.write_text(json.dumps(document))
        return path

    def fake_plugin(self, name: str, script: str) -> Path:
        path = self.fake_bin / name
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)
        return path

    def pod(self, host_ports: list[HostPort] | None = None) -> PodNetworkRequest:
        pin = self.root / "pins" / f"net-{len(self.pins)}"
        self.pins.append(pin)

        def build() -> None:
            with unshared(["net"]):
                bring_up_loopback()
                pin_current("net", pin)

        in_new_thread(build)
        return PodNetworkRequest(
            sandbox_id=uuid.uuid4().hex + uuid.uuid4().hex,
            pod_name=f"web-{len(self.pins)}",
            pod_namespace="moorage-it",
            pod_uid=str(uuid.uuid4()),
            netns_path=str(pin),
            host_ports=host_ports or [],
        )

    def cache_file(self, pod: PodNetworkRequest) -> Path:
        return self.cache_dir / f"{self.name}-{pod.sandbox_id}-eth0"

    def ipam_file(self, address: str) -> Path:
        return self.ipam_dir / self.name / address

    def host_veth(self, pod: PodNetworkRequest) -> str:
        result = json.loads(self.cache_file(pod).read_text())["result"]
        (veth,) = [
            i["name"]
            for i in result["interfaces"]
            if not i.get("sandbox") and i["name"] != self.bridge
        ]
        return str(veth)


def _unused_subnet() -> ipaddress.IPv4Network:
    routes = run("ip", "-4", "route").stdout + run("ip", "-4", "addr").stdout
    while True:
        subnet = ipaddress.IPv4Network(f"10.123.{random.randint(0, 255)}.0/24")
        if f"10.123.{subnet.network_address.packed[2]}." not in routes:
            return subnet


@pytest.fixture
async def net() -> AsyncIterator[CniTestNet]:
    root = Path(tempfile.mkdtemp(prefix="mrc-cni-"))
    test_net = CniTestNet(root=root, tag=uuid.uuid4().hex[:6], subnet=_unused_subnet())
    for directory in (test_net.conf_dir, test_net.fake_bin, test_net.ipam_dir):
        directory.mkdir()
    try:
        yield test_net
    finally:
        for pin in test_net.pins:
            unpin(pin)
        run("ip", "link", "del", test_net.bridge)
        remove_plugin_rules(rule_marker(test_net.name))
        shutil.rmtree(root)


# ---------------------------------------------------------------- tests


async def test_an_attached_pod_gets_an_address_in_the_subnet_and_reaches_its_gateway(
    net: CniTestNet,
) -> None:
    net.write_conflist()
    network = CniNetwork(net.settings())
    pod = net.pod()

    status = await network.attach(pod)

    (ip,) = status.ips
    assert ipaddress.IPv4Address(ip) in net.subnet
    assert ip != net.gateway
    assert wait_until(lambda: pod_can_ping(Path(pod.netns_path), net.gateway), timeout_s=10), (
        "the pod to ping its gateway"
    )


async def test_two_pods_reach_each_other(net: CniTestNet) -> None:
    net.write_conflist()
    network = CniNetwork(net.settings())
    first, second = net.pod(), net.pod()

    (first_ip,) = (await network.attach(first)).ips
    (second_ip,) = (await network.attach(second)).ips

    assert first_ip != second_ip
    assert wait_until(lambda: pod_can_ping(Path(first.netns_path), second_ip), timeout_s=10), (
        "pod 1 to ping pod 2"
    )
    assert wait_until(lambda: pod_can_ping(Path(second.netns_path), first_ip), timeout_s=10), (
        "pod 2 to ping pod 1"
    )


async def test_a_host_port_reaches_a_listener_in_the_pod_from_the_node_ip_and_localhost(
    net: CniTestNet,
) -> None:
    net.write_conflist()
    network = CniNetwork(net.settings())
    host_port = free_port()
    pod = net.pod([HostPort("tcp", 8080, host_port)])

    await network.attach(pod)

    with pod_listener(pod.netns_path, 8080):
        assert fetch(node_ipv4(), host_port) == REPLY
        # portmap 1.1.1 with snat sets route_localnet on the bridge and masquerades
        # 127.0.0.1, so the loopback address works too.
        assert fetch("127.0.0.1", host_port) == REPLY
    assert run("sysctl", "-n", f"net.ipv4.conf.{net.bridge}.route_localnet").stdout.strip() == "1"


async def test_detach_removes_veth_cache_file_address_and_port_rules_and_may_run_twice(
    net: CniTestNet,
) -> None:
    net.write_conflist()
    network = CniNetwork(net.settings())
    pod = net.pod([HostPort("tcp", 8080, free_port())])
    (ip,) = (await network.attach(pod)).ips
    veth = net.host_veth(pod)
    assert link_exists(veth)
    assert net.ipam_file(ip).exists()
    rules = iptables_lines(pod.sandbox_id)
    assert any("DNAT" in r or "dnat" in r for r in rules), rules  # portmap's
    assert any("MASQUERADE" in r for r in rules), rules  # bridge's ipMasq

    await network.detach(pod)

    assert not net.cache_file(pod).exists()
    assert not net.ipam_file(ip).exists()
    assert iptables_lines(pod.sandbox_id) == []
    assert wait_until(lambda: not link_exists(veth), timeout_s=10), f"{veth} to go"

    await network.detach(pod)
    assert iptables_lines(pod.sandbox_id) == []


async def test_a_missing_plugin_binary_fails_naming_it_and_leaves_nothing(net: CniTestNet) -> None:
    missing = f"mrc-missing-{net.tag}"
    net.write_conflist(net.plugins({"type": missing}))
    network = CniNetwork(net.settings())
    pod = net.pod()

    with pytest.raises(CniPluginError, match=missing):
        await network.attach(pod)

    assert not network.readiness().ready
    assert missing in network.readiness().message
    assert list(net.cache_dir.glob("*")) == []
    assert run("ip", "-o", "link", "show", "master", net.bridge).stdout == ""
    assert iptables_lines(pod.sandbox_id) == []


async def test_a_failing_plugin_after_the_bridge_takes_the_bridge_attachment_down_again(
    net: CniTestNet,
) -> None:
    net.fake_plugin(
        "mrc-refuse",
        'cat >/dev/null\nif [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion":"1.0.0","code":7,"msg":"refused on purpose"}\'\n  exit 1\nfi\n',
    )
    net.write_conflist(net.plugins({"type": "mrc-refuse"}))
    network = CniNetwork(net.settings())
    pod = net.pod([HostPort("tcp", 8080, free_port())])

    with pytest.raises(CniPluginError, match=r"mrc-refuse.*refused on purpose"):
        await network.attach(pod)

    assert list(net.cache_dir.glob("*")) == []
    assert wait_until(
        lambda: run("ip", "-o", "link", "show", "master", net.bridge).stdout == "", timeout_s=10
    ), "no veth left on the bridge"
    assert [p.name for p in (net.ipam_dir / net.name).iterdir() if p.name[0].isdigit()] == []
    assert iptables_lines(pod.sandbox_id) == []


async def test_a_hanging_plugin_times_out_and_its_processes_are_killed(net: CniTestNet) -> None:
    pid_file = net.root / "hang.pids"
    # Shadows the real portmap: bin_dirs lists the fake dir first. The sleep runs as a child,
    # so only killing the plugin's whole process group ends it.
    net.fake_plugin("portmap", f"sleep 60 &\necho $$ $! >> {pid_file}\nwait\n")
    net.write_conflist()
    network = CniNetwork(net.settings(plugin_timeout_s=1.0))
    pod = net.pod()

    started = time.monotonic()
    try:
        with pytest.raises(CniPluginError, match=r"portmap.*timed out after 1s"):
            await network.attach(pod)

        # ADD timed out, then the clean-up DEL of the same plugin did too.
        assert time.monotonic() - started < 6
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 4
        assert wait_until(lambda: all(process_gone(pid) for pid in pids), timeout_s=10), (
            "the plugin processes to die"
        )
        assert list(net.cache_dir.glob("*")) == []
        assert wait_until(
            lambda: run("ip", "-o", "link", "show", "master", net.bridge).stdout == "", timeout_s=10
        ), "no veth left on the bridge"
    finally:
        # Should the driver leave a plugin process behind, the test does not.
        for pid in map(int, pid_file.read_text().split() if pid_file.exists() else []):
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)


async def test_a_conflist_dropped_in_later_is_used_without_a_new_driver(net: CniTestNet) -> None:
    network = CniNetwork(net.settings())
    pod = net.pod()
    readiness = network.readiness()
    assert not readiness.ready
    assert readiness.reason == "NetworkPluginNotReady"
    assert str(net.conf_dir) in readiness.message
    with pytest.raises(NetworkNotReady, match=str(net.conf_dir)):
        await network.attach(pod)

    net.write_conflist()

    assert network.readiness().ready
    (ip,) = (await network.attach(pod)).ips
    assert ipaddress.IPv4Address(ip) in net.subnet
    await network.detach(pod)


async def test_reconcile_releases_the_attachment_of_a_sandbox_that_is_gone(net: CniTestNet) -> None:
    net.write_conflist()
    network = CniNetwork(net.settings())
    stale, live = net.pod([HostPort("tcp", 8080, free_port())]), net.pod()
    (stale_ip,) = (await network.attach(stale)).ips
    (live_ip,) = (await network.attach(live)).ips
    stale_veth, live_veth = net.host_veth(stale), net.host_veth(live)

    # A restarted agent knows only the live pod.
    fixed = await CniNetwork(net.settings()).reconcile([live])

    assert len(fixed) == 1 and stale.sandbox_id in fixed[0]
    assert not net.cache_file(stale).exists()
    assert not net.ipam_file(stale_ip).exists()
    assert iptables_lines(stale.sandbox_id) == []
    assert wait_until(lambda: not link_exists(stale_veth), timeout_s=10), f"{stale_veth} to go"
    assert net.cache_file(live).exists()
    assert net.ipam_file(live_ip).exists()
    assert link_exists(live_veth)
