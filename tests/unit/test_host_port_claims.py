"""hostPort claims of the bridge network: conflicts by protocol, port and host address."""

from __future__ import annotations

from pathlib import Path

import pytest

from network.bridge_network import BridgeNetwork, BridgeSettings, published_ports
from network.errors import HostPortInUse, InvalidNetworkRequest
from network.types import HostPort
from runtime.state.db import StateDB


@pytest.fixture
def network(tmp_path: Path) -> BridgeNetwork:
    return BridgeNetwork(BridgeSettings(), "10.1.0.0/24", StateDB(tmp_path / "state.db"))


def test_the_same_port_and_protocol_is_refused_naming_the_holder(network: BridgeNetwork) -> None:
    network.claim_host_ports("pod-a", [HostPort("tcp", 80, 8080)])

    with pytest.raises(HostPortInUse, match="pod-a"):
        network.claim_host_ports("pod-b", [HostPort("tcp", 81, 8080)])


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        (HostPort("tcp", 80, 8080), HostPort("udp", 80, 8080)),
        (HostPort("tcp", 80, 8080), HostPort("tcp", 80, 8081)),
        (HostPort("tcp", 80, 8080, "127.0.0.1"), HostPort("tcp", 80, 8080, "10.0.0.1")),
    ],
)
def test_different_protocols_ports_or_addresses_do_not_clash(
    network: BridgeNetwork, held: HostPort, wanted: HostPort
) -> None:
    network.claim_host_ports("pod-a", [held])
    network.claim_host_ports("pod-b", [wanted])


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        (HostPort("tcp", 80, 8080, ""), HostPort("tcp", 80, 8080, "127.0.0.1")),
        (HostPort("tcp", 80, 8080, "127.0.0.1"), HostPort("tcp", 80, 8080, "")),
    ],
)
def test_all_addresses_clash_with_any_one_address(
    network: BridgeNetwork, held: HostPort, wanted: HostPort
) -> None:
    network.claim_host_ports("pod-a", [held])
    with pytest.raises(HostPortInUse):
        network.claim_host_ports("pod-b", [wanted])


def test_released_ports_can_be_claimed_again(network: BridgeNetwork) -> None:
    network.claim_host_ports("pod-a", [HostPort("tcp", 80, 8080)])
    network.release_pod("pod-a")

    network.claim_host_ports("pod-b", [HostPort("tcp", 80, 8080)])


def test_host_port_zero_publishes_nothing() -> None:
    assert published_ports([HostPort("tcp", 80, 0), HostPort("tcp", 80, 8080)]) == [
        HostPort("tcp", 80, 8080)
    ]


@pytest.mark.parametrize(
    "port", [HostPort("icmp", 80, 8080), HostPort("tcp", 0, 8080), HostPort("tcp", 70000, 8080)]
)
def test_malformed_port_mappings_are_refused(port: HostPort) -> None:
    with pytest.raises(InvalidNetworkRequest):
        published_ports([port])
