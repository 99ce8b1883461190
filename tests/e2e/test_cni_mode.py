"""CNI mode through the CRI: Debian's bridge, host-local and portmap plugins from /usr/lib/cni."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from network.bridge import delete_link
from tests.cni_plugins import remove_plugin_rules, rule_marker, standard_plugins
from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.pods import assert_rpc_error, pod_config
from tests.e2e.test_network import netns, pod_ip, with_host_port
from tests.netutil import REPLY, fetch, free_port, node_ipv4, pings, pod_listener
from tests.waiting import wait_until

PLUGINS = Path("/usr/lib/cni")


class CniAgent:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.conf_dir = agent.base_dir / "net.d"
        self.bin_dir = agent.base_dir / "cni-bin"
        self.bridge = f"mrc{agent.token}"
        self.cache_dir = agent.root_dir / "cni"
        self.ipam_dir = agent.base_dir / "host-local"
        self.network = f"e2e{agent.token}"

    def conflist(self, plugins: list[dict[str, object]] | None = None) -> str:
        default = standard_plugins(self.bridge, self.agent.pod_cidr, str(self.ipam_dir))
        return json.dumps(
            {"cniVersion": "1.0.0", "name": self.network, "plugins": plugins or default}
        )

    def install(self, text: str, name: str = "10-e2e.conflist") -> None:
        self.conf_dir.mkdir(exist_ok=True)
        (self.conf_dir / name).write_text(text)

    def rules_naming(self, sandbox_id: str) -> list[str]:
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
        return [line for line in saved.stdout.splitlines() if sandbox_id in line]

    def allocations(self) -> list[str]:
        network_dir = self.ipam_dir / self.network
        if not network_dir.is_dir():
            return []
        return [p.name for p in network_dir.iterdir() if p.name[0].isdigit()]


@pytest.fixture
def cni(agent_factory: AgentFactory) -> Iterator[CniAgent]:
    agent = agent_factory(start=False)
    setup = CniAgent(agent)
    setup.bin_dir.mkdir()
    config = agent.config_path.read_text().replace(
        "[network]\n",
        textwrap.dedent(
            f"""\
            [network]
            mode = "cni"
            cni_conf_dir = "{setup.conf_dir}"
            cni_bin_dirs = ["{setup.bin_dir}", "{PLUGINS}"]
            cni_plugin_timeout_s = 2.0
            """
        ),
    )
    agent.config_path.write_text(config)
    try:
        yield setup
    finally:
        # Pods go through the agent first, so the plugins' DEL still finds bridge and netns.
        problems = agent.cleanup()
        delete_link(setup.bridge)
        remove_plugin_rules(rule_marker(setup.network))
        if problems:
            pytest.fail("cleanup after the test failed:\n" + "\n".join(problems))


def network_ready(agent: Agent) -> Any:
    conditions = agent.runtime.Status(pb.StatusRequest()).status.conditions
    return next(c for c in conditions if c.type == "NetworkReady")


def test_without_a_config_the_network_is_not_ready_until_one_is_dropped_in(cni: CniAgent) -> None:
    cni.agent.start()
    condition = network_ready(cni.agent)
    assert (condition.status, condition.reason) == (False, "NetworkPluginNotReady")
    assert str(cni.conf_dir) in condition.message
    assert_rpc_error(
        lambda: cni.agent.run_pod(pod_config()),
        grpc.StatusCode.FAILED_PRECONDITION,
        str(cni.conf_dir),
    )
    assert cni.agent.leftovers() == []

    cni.install(cni.conflist())

    assert network_ready(cni.agent).status is True
    pod_id = cni.agent.run_pod(pod_config())
    assert ipaddress.ip_address(pod_ip(cni.agent, pod_id)) in ipaddress.ip_network(
        cni.agent.pod_cidr
    )


def test_pods_reach_each_other_and_a_host_port_on_the_node(cni: CniAgent) -> None:
    cni.install(cni.conflist())
    cni.agent.start()
    host_port = free_port()
    server = cni.agent.run_pod(with_host_port(pod_config(), host_port, 8080))
    client = cni.agent.run_pod(pod_config())

    assert pings(netns(cni.agent, client), pod_ip(cni.agent, server))
    with pod_listener(netns(cni.agent, server), 8080):
        assert fetch(node_ipv4(), host_port) == REPLY
        assert fetch("127.0.0.1", host_port) == REPLY


def test_a_missing_plugin_fails_naming_it_and_leaves_nothing(cni: CniAgent) -> None:
    plugins = json.loads(cni.conflist())["plugins"]
    plugins.append({"type": "no-such-plugin"})
    cni.install(cni.conflist(plugins))
    cni.agent.start()
    config = pod_config()

    assert_rpc_error(lambda: cni.agent.run_pod(config), grpc.StatusCode.UNKNOWN, "no-such-plugin")

    assert cni.agent.leftovers() == []
    assert not cni.cache_dir.exists() or list(cni.cache_dir.iterdir()) == []
    assert cni.allocations() == []
    assert wait_until(lambda: not _veths_on(cni.bridge))


def test_kill9_and_restart_keep_cni_addresses_and_reachability(cni: CniAgent) -> None:
    cni.install(cni.conflist())
    cni.agent.start()
    first, second = cni.agent.run_pod(pod_config()), cni.agent.run_pod(pod_config())
    before = {p: pod_ip(cni.agent, p) for p in (first, second)}

    cni.agent.kill9()
    cni.agent.start()

    assert {p: pod_ip(cni.agent, p) for p in (first, second)} == before
    assert pings(netns(cni.agent, first), before[second])


def test_fifty_cni_pod_cycles_leave_nothing(cni: CniAgent) -> None:
    cni.install(cni.conflist())
    cni.agent.start()
    for _ in range(50):
        pod_id = cni.agent.run_pod(with_host_port(pod_config(), free_port(), 80))
        cni.agent.stop_pod(pod_id)
        cni.agent.remove_pod(pod_id)
        assert cni.rules_naming(pod_id) == []

    assert cni.agent.leftovers() == []
    assert list(cni.cache_dir.iterdir()) == []
    assert cni.allocations() == []
    assert wait_until(lambda: not _veths_on(cni.bridge))


def _veths_on(bridge: str) -> list[str]:
    links = subprocess.run(
        ["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True, check=False
    ).stdout
    return [line.split(":")[1].strip() for line in links.splitlines()]
