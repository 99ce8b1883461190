"""Resource checks before the OCI runtime: the field named, the kernel's bounds kept."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import runtime.resource_limits
from runtime.errors import InvalidArgument
from runtime.resource_limits import check_resources, parse_list
from runtime.resources import Resources


@pytest.fixture(autouse=True)
def two_cpus_one_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cpus").write_text("0-1\n")
    (tmp_path / "mems").write_text("0\n")
    monkeypatch.setattr(runtime.resource_limits, "ONLINE_CPUS", tmp_path / "cpus")
    monkeypatch.setattr(runtime.resource_limits, "ONLINE_MEMS", tmp_path / "mems")


@pytest.mark.parametrize(
    "resources",
    [
        Resources(),
        Resources(cpu_period=100_000, cpu_quota=50_000, cpu_shares=2),
        Resources(cpu_quota=-1, cpu_shares=262_144, oom_score_adj=-1000),
        Resources(memory_limit_bytes=64 << 20, memory_swap_limit_bytes=-1),
        Resources(memory_limit_bytes=64 << 20, memory_swap_limit_bytes=64 << 20),
        Resources(cpuset_cpus="0-1", cpuset_mems="0", oom_score_adj=1000),
        Resources(cpuset_cpus="1,0", hugepage_limits={"2MB": 0, "1GB": 1 << 30}),
        Resources(unified={"memory.high": "max"}),
    ],
)
def test_what_the_kubelet_sends_passes(resources: Resources) -> None:
    check_resources(resources, "r")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cpu_period": 999}, "r.cpu_period"),
        ({"cpu_period": 1_000_001}, "r.cpu_period"),
        ({"cpu_quota": 999}, "r.cpu_quota"),
        ({"cpu_quota": -2}, "r.cpu_quota"),
        ({"cpu_shares": 1}, "r.cpu_shares"),
        ({"cpu_shares": 262_145}, "r.cpu_shares"),
        ({"memory_limit_bytes": -1}, "r.memory_limit_in_bytes"),
        ({"memory_swap_limit_bytes": -2}, "r.memory_swap_limit_in_bytes"),
        ({"memory_limit_bytes": 2 << 20, "memory_swap_limit_bytes": 1 << 20}, "swap"),
        ({"oom_score_adj": -1001}, "r.oom_score_adj"),
        ({"oom_score_adj": 1001}, "r.oom_score_adj"),
        ({"cpuset_cpus": "0-"}, "r.cpuset_cpus"),
        ({"cpuset_cpus": "a"}, "r.cpuset_cpus"),
        ({"cpuset_cpus": "2"}, "r.cpuset_cpus"),
        ({"cpuset_mems": "1"}, "r.cpuset_mems"),
        ({"hugepage_limits": {"huge": 1}}, "r.hugepage_limits"),
        ({"hugepage_limits": {"2MB": -1}}, "r.hugepage_limits"),
        ({"unified": {"../../tasks": "1"}}, "r.unified"),
    ],
)
def test_a_value_no_cgroup_takes_is_invalid_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        check_resources(replace(Resources(), **change), "r")  # type: ignore[arg-type]


def test_a_cpu_the_node_lacks_names_the_online_ones() -> None:
    with pytest.raises(InvalidArgument, match=r"online: 0-1"):
        check_resources(Resources(cpuset_cpus="0-3"), "r")


def test_an_unreadable_online_list_checks_only_the_syntax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.resource_limits, "ONLINE_CPUS", tmp_path / "absent")

    check_resources(Resources(cpuset_cpus="0-63"), "r")


@pytest.mark.parametrize(
    ("text", "numbers"), [("0", {0}), ("0-3", {0, 1, 2, 3}), ("1,3-4", {1, 3, 4})]
)
def test_kernel_lists_parse(text: str, numbers: set[int]) -> None:
    assert parse_list(text) == numbers


@pytest.mark.parametrize("text", ["", "3-1", "1,,2", "-1", "1-2-3", " 1"])
def test_malformed_kernel_lists_do_not_parse(text: str) -> None:
    with pytest.raises(ValueError):
        parse_list(text)
