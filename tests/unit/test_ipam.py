"""Host-local IPAM: ranges, round-robin allocation, exhaustion, release and persistence."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from network.errors import AddressesExhausted, InvalidNetworkRequest
from network.ipam import AddressPool, parse_ranges
from runtime.state.db import StateDB


def test_first_pod_gets_the_address_after_the_gateway(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/24"), db)

    (address,) = pool.allocate("pod-a")

    assert str(address.address) == "10.1.0.2"
    assert str(address.gateway) == "10.1.0.1"
    assert address.network.prefixlen == 24
    assert db.allocations() == {"10.1.0.2": "pod-a"}


def test_asking_twice_for_the_same_pod_gives_the_same_address(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/24"), db)

    assert pool.allocate("pod-a") == pool.allocate("pod-a")
    assert len(db.allocations()) == 1


def test_no_address_is_handed_out_twice_and_a_full_range_is_refused(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/29"), db)

    given = [pool.allocate(f"pod-{i}")[0].address for i in range(5)]

    assert len(set(given)) == 5
    assert {str(a) for a in given} == {f"10.1.0.{i}" for i in range(2, 7)}
    with pytest.raises(AddressesExhausted, match=re.escape("10.1.0.0/29")):
        pool.allocate("pod-6")
    assert pool.addresses_of("pod-6") == []


def test_a_freed_address_is_reused_only_after_the_others(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/29"), db)
    first = pool.allocate("a")[0].address
    pool.allocate("b")
    pool.release("a")

    nxt = pool.allocate("c")[0].address

    assert nxt != first
    for name in ("d", "e", "f"):
        pool.allocate(name)
    assert first in {a for o in ("d", "e", "f") for a in pool.addresses_of(o)}


def test_allocations_survive_a_restart(db: StateDB, tmp_path: Path) -> None:
    AddressPool(parse_ranges("10.1.0.0/24"), db).allocate("pod-a")
    db.close()

    reopened = AddressPool(parse_ranges("10.1.0.0/24"), StateDB(tmp_path / "state.db"))

    assert [str(a) for a in reopened.addresses_of("pod-a")] == ["10.1.0.2"]
    assert str(reopened.allocate("pod-b")[0].address) != "10.1.0.2"


def test_release_frees_every_address_of_the_pod(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/24,fd01::/64"), db)
    pool.allocate("pod-a")

    pool.release("pod-a")
    pool.release("pod-a")

    assert db.allocations() == {}
    assert pool.owners() == set()


def test_dual_stack_gives_an_ipv4_then_an_ipv6_address(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/24,fd01::/64"), db)

    v4, v6 = pool.allocate("pod-a")

    assert (v4.address.version, v6.address.version) == (4, 6)
    assert v6.address == ipaddress.ip_address("fd01::2")
    assert v6.gateway == ipaddress.ip_address("fd01::1")


def test_a_pod_whose_second_range_is_full_keeps_no_address(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/24,fd01::/126"), db)
    pool.allocate("a")
    pool.allocate("b")

    with pytest.raises(AddressesExhausted):
        pool.allocate("c")
    assert pool.addresses_of("c") == []
    assert "c" not in db.allocations().values()


@pytest.mark.parametrize(
    ("cidrs", "why"),
    [
        ("10.1.0.0/33", "10.1.0.0/33"),
        ("10.1.0.1/24", "host bits"),
        ("not-a-cidr", "not-a-cidr"),
        ("10.1.0.0/31", "too small"),
        ("10.1.0.0/16,10.2.0.0/16", "one IPv4 and one IPv6"),
        ("10.1.0.0/16,fd01::/64,fd02::/64", "one IPv4 and one IPv6"),
    ],
)
def test_malformed_ranges_are_refused(cidrs: str, why: str) -> None:
    with pytest.raises(InvalidNetworkRequest, match=re.escape(why)):
        parse_ranges(cidrs)


def test_new_ranges_apply_to_new_pods_while_old_pods_keep_theirs(db: StateDB) -> None:
    pool = AddressPool(parse_ranges("10.1.0.0/24"), db)
    old = pool.allocate("old")[0].address

    pool.networks = parse_ranges("10.2.0.0/24")
    new = pool.allocate("new")[0].address

    assert new in ipaddress.ip_network("10.2.0.0/24")
    assert pool.addresses_of("old") == [old]
