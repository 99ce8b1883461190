"""Pod networking through the CRI with the built-in bridge: addresses, reachability, hostPorts."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from cri.proto import api_pb2 as pb
from network.bridge import pod_veths_on
from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.pods import assert_rpc_error, pod_config
from tests.netutil import REPLY, fetch, fetch_from_pod, free_port, node_ipv4, pings, pod_listener


def with_host_port(config: Any, host_port: int, container_port: int, host_ip: str = "") -> Any:
    config.port_mappings.append(
        pb.PortMapping(
            protocol=pb.TCP, container_port=container_port, host_port=host_port, host_ip=host_ip
        )
    )
    return config


def pod_ip(agent: Agent, pod_id: str) -> str:
    return str(agent.pod_status(pod_id).network.ip)


def netns(agent: Agent, pod_id: str) -> str:
    return str(agent.pod_info(pod_id)["pins"]["net"])


def test_a_pod_gets_an_address_from_the_pod_range(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    status = agent.pod_status(pod_id)
    address = ipaddress.ip_address(status.network.ip)
    network = ipaddress.ip_network(agent.pod_cidr)
    assert address in network
    assert address not in (network.network_address, network.network_address + 1)
    assert list(status.network.additional_ips) == []
    assert agent.pod_info(pod_id)["ips"] == [str(address)]
    assert agent.db_allocations() == [str(address)]


def test_network_is_reported_ready(agent: Agent) -> None:
    conditions = agent.runtime.Status(pb.StatusRequest()).status.conditions
    network = next(c for c in conditions if c.type == "NetworkReady")
    assert network.status is True, network


def test_two_pods_reach_each_other_and_their_gateway(agent: Agent) -> None:
    first, second = agent.run_pod(pod_config()), agent.run_pod(pod_config())
    gateway = str(ipaddress.ip_network(agent.pod_cidr).network_address + 1)

    assert pod_ip(agent, first) != pod_ip(agent, second)
    assert pings(netns(agent, first), pod_ip(agent, second))
    assert pings(netns(agent, second), pod_ip(agent, first))
    assert pings(netns(agent, first), gateway)


def test_a_pod_port_is_reachable_from_the_node_by_pod_ip(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    with pod_listener(netns(agent, pod_id), 8080):
        assert fetch(pod_ip(agent, pod_id), 8080) == REPLY


def test_host_port_is_reachable_on_localhost_and_the_node_address(agent: Agent) -> None:
    host_port = free_port()
    pod_id = agent.run_pod(with_host_port(pod_config(), host_port, 8080))

    with pod_listener(netns(agent, pod_id), 8080):
        assert fetch("127.0.0.1", host_port) == REPLY
        assert fetch(node_ipv4(), host_port) == REPLY


def test_another_pod_reaches_a_host_port_on_the_node_address(agent: Agent) -> None:
    host_port = free_port()
    server = agent.run_pod(with_host_port(pod_config(), host_port, 8080))
    client = agent.run_pod(pod_config())

    with pod_listener(netns(agent, server), 8080):
        assert fetch_from_pod(netns(agent, client), node_ipv4(), host_port) == REPLY.decode()
        # Hairpin: the pod reaches itself through its own hostPort.
        assert fetch_from_pod(netns(agent, server), node_ipv4(), host_port) == REPLY.decode()


def test_host_port_bound_to_one_address_is_not_published_on_others(agent: Agent) -> None:
    host_port = free_port()
    pod_id = agent.run_pod(with_host_port(pod_config(), host_port, 8080, host_ip="127.0.0.1"))

    with pod_listener(netns(agent, pod_id), 8080):
        assert fetch("127.0.0.1", host_port) == REPLY
        try:
            fetch(node_ipv4(), host_port, timeout_s=1)
        except OSError:
            pass
        else:
            raise AssertionError("the hostPort answered on the node address too")


def test_a_held_host_port_is_refused_naming_the_holder_and_nothing_is_left(
    agent: Agent,
) -> None:
    host_port = free_port()
    holder = agent.run_pod(with_host_port(pod_config(), host_port, 80))
    second = with_host_port(pod_config(), host_port, 81)

    assert_rpc_error(lambda: agent.run_pod(second), grpc.StatusCode.ALREADY_EXISTS, holder)

    assert agent.list_pod_ids() == {holder}
    assert len(pod_veths_on(agent.bridge)) == 1
    assert len(agent.db_allocations()) == 1
    # The same port over UDP is a different hostPort.
    udp = pod_config()
    udp.port_mappings.append(
        pb.PortMapping(protocol=pb.UDP, container_port=81, host_port=host_port)
    )
    agent.run_pod(udp)


def test_stopping_a_pod_frees_its_address_veth_and_rules_and_stopping_twice_succeeds(
    agent: Agent,
) -> None:
    pod_id = agent.run_pod(with_host_port(pod_config(), free_port(), 80))
    assert agent.pod_rules() != []

    agent.stop_pod(pod_id)
    agent.stop_pod(pod_id)

    assert pod_veths_on(agent.bridge) == []
    assert agent.pod_rules() == []
    assert agent.db_allocations() == []
    # The status keeps the address it had, as containerd's does, for kubelet's bookkeeping.
    assert agent.pod_status(pod_id).state == pb.SANDBOX_NOTREADY


def test_host_network_pods_get_no_address_veth_or_allocation(agent: Agent) -> None:
    pod_id = agent.run_pod(with_host_port(pod_config(network=pb.NODE), free_port(), 80))

    assert agent.pod_status(pod_id).network.ip == ""
    assert pod_veths_on(agent.bridge) == []
    assert agent.db_allocations() == []
    assert agent.pod_rules() == []


def test_a_full_range_is_refused_and_leaves_nothing(agent_factory: AgentFactory) -> None:
    agent = agent_factory(start=False)
    # A /30 holds the network, the gateway, one pod and the broadcast address.
    cidr = agent.pod_cidr.replace(".0/24", ".0/30")
    agent.config_path.write_text(agent.config_path.read_text().replace(agent.pod_cidr, cidr))
    agent.start()
    only = agent.run_pod(pod_config())

    message = assert_rpc_error(
        lambda: agent.run_pod(pod_config()), grpc.StatusCode.RESOURCE_EXHAUSTED
    )

    assert "no free address" in message
    assert agent.list_pod_ids() == {only}
    assert len(pod_veths_on(agent.bridge)) == 1
    agent.remove_pod(only)
    agent.run_pod(pod_config())


def test_concurrent_pods_get_distinct_addresses(agent: Agent) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        pod_ids = list(pool.map(lambda _: agent.run_pod(pod_config()), range(12)))

    addresses = [pod_ip(agent, p) for p in pod_ids]
    assert len(set(addresses)) == 12
    assert sorted(agent.db_allocations()) == sorted(addresses)


def test_a_cidr_sent_by_kubelet_is_used_for_new_pods(agent: Agent) -> None:
    old = agent.run_pod(pod_config())
    second_octet = agent.pod_cidr.split(".")[1]
    new_cidr = f"10.{second_octet}.{(int(agent.pod_cidr.split('.')[2]) + 128) % 256}.0/25"

    agent.runtime.UpdateRuntimeConfig(
        pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr=new_cidr))
        )
    )
    new = agent.run_pod(pod_config())

    assert ipaddress.ip_address(pod_ip(agent, new)) in ipaddress.ip_network(new_cidr)
    assert ipaddress.ip_address(pod_ip(agent, old)) in ipaddress.ip_network(agent.pod_cidr)
    assert pings(netns(agent, new), str(ipaddress.ip_network(new_cidr).network_address + 1))


def test_overlapping_dual_stack_ranges_are_invalid(agent: Agent) -> None:
    request = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(
            network_config=pb.NetworkConfig(pod_cidr="10.1.0.0/16,10.1.2.0/24")
        )
    )
    assert_rpc_error(
        lambda: agent.runtime.UpdateRuntimeConfig(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "pod_cidr",
        "10.1.2.0/24",
    )


def test_kill9_and_restart_keep_addresses_and_reachability(agent: Agent) -> None:
    host_port = free_port()
    server = agent.run_pod(with_host_port(pod_config(), host_port, 8080))
    client = agent.run_pod(pod_config())
    before = {p: pod_ip(agent, p) for p in (server, client)}

    agent.kill9()
    agent.start()

    assert {p: pod_ip(agent, p) for p in (server, client)} == before
    assert pings(netns(agent, client), before[server])
    with pod_listener(netns(agent, server), 8080):
        assert fetch("127.0.0.1", host_port) == REPLY
    # A new pod after the restart does not get an address already held.
    assert pod_ip(agent, agent.run_pod(pod_config())) not in before.values()


def test_fifty_pod_cycles_with_host_ports_leave_nothing(agent: Agent) -> None:
    for i in range(50):
        config = pod_config(pid=pb.POD if i % 2 else pb.CONTAINER)
        pod_id = agent.run_pod(with_host_port(config, free_port(), 80))
        assert pod_ip(agent, pod_id)
        agent.stop_pod(pod_id)
        agent.remove_pod(pod_id)

    assert agent.leftovers() == []


def test_dual_stack_pods_get_both_addresses_and_reach_each_other_over_ipv6(
    agent_factory: AgentFactory,
) -> None:
    agent = agent_factory(start=False)
    v6 = f"fd{agent.token[:2]}:{agent.token[2:6]}::/64"
    dual = f"{agent.pod_cidr},{v6}"
    agent.config_path.write_text(agent.config_path.read_text().replace(agent.pod_cidr, dual))
    agent.start()
    first, second = agent.run_pod(pod_config()), agent.run_pod(pod_config())

    statuses = [agent.pod_status(p).network for p in (first, second)]
    for status in statuses:
        assert ipaddress.ip_address(status.ip) in ipaddress.ip_network(agent.pod_cidr)
        (extra,) = status.additional_ips
        assert ipaddress.ip_address(extra.ip) in ipaddress.ip_network(v6)
    assert pings(netns(agent, first), statuses[1].additional_ips[0].ip)
    assert pings(netns(agent, first), str(ipaddress.ip_network(v6).network_address + 1))
