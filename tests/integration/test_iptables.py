"""Moorage's iptables chains on the real nat and filter tables."""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from network.iptables import PodRules
from network.types import HostPort

NETWORK = ipaddress.ip_network("10.251.0.0/24")


def saved(table: str) -> list[str]:
    out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def ours(rules: PodRules) -> list[str]:
    return [line for t in ("nat", "filter") for line in saved(t) if rules.prefix in line]


@pytest.fixture
def rules() -> Iterator[PodRules]:
    token = secrets.token_hex(3).upper()
    pod_rules = PodRules(f"MIT{token}", f"mit{token.lower()}")
    try:
        yield pod_rules
    finally:
        pod_rules.remove_all()
    assert ours(pod_rules) == []


def test_base_setup_twice_adds_each_jump_once(rules: PodRules) -> None:
    rules.ensure_base([NETWORK])
    rules.ensure_base([NETWORK])

    nat = saved("nat")
    jumps = [line for line in nat if line.endswith(f"-j {rules.hostports_chain}")]
    assert len(jumps) == 2  # PREROUTING and OUTPUT
    assert sum(line == f"-A POSTROUTING -j {rules.postrouting_chain}" for line in nat) == 1
    masquerade = f"-A {rules.postrouting_chain} -s {NETWORK} ! -d {NETWORK} -j MASQUERADE"
    assert nat.count(masquerade) == 1
    assert saved("filter").count(f"-A FORWARD -j {rules.forward_chain}") == 1


def test_pod_host_ports_get_a_chain_of_their_own_that_removal_takes_away(
    rules: PodRules,
) -> None:
    rules.ensure_base([NETWORK])
    sandbox_id = secrets.token_hex(32)
    rules.add_hostports(
        sandbox_id,
        "10.251.0.5",
        [HostPort("tcp", 80, 8080), HostPort("udp", 53, 5353, "127.0.0.1")],
    )

    chain = rules.pod_chain(sandbox_id)
    nat = saved("nat")
    assert f"-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.251.0.5:80" in nat
    assert any("-d 127.0.0.1/32 -p udp" in line and "10.251.0.5:53" in line for line in nat)
    assert rules.pods_with_hostports() == [chain.removeprefix(f"{rules.prefix}-HP-")]

    assert rules.remove_hostports(sandbox_id) is True
    assert rules.remove_hostports(sandbox_id) is False
    assert not any(chain in line for line in saved("nat"))


def test_remove_all_takes_every_chain_and_jump_with_the_prefix(rules: PodRules) -> None:
    rules.ensure_base([NETWORK])
    rules.add_hostports(secrets.token_hex(32), "10.251.0.6", [HostPort("tcp", 80, 8081)])

    rules.remove_all()

    assert ours(rules) == []
