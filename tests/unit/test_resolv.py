from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import InvalidArgument
from runtime.pods.model import DnsConfig
from runtime.pods.resolv import render_resolv_conf

HOST_TEXT = "# host file\nnameserver 192.0.2.53\nsearch example.org\n"


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(HOST_TEXT)
    return path


def test_servers_searches_and_options_each_get_their_line(host_file: Path) -> None:
    dns = DnsConfig(
        servers=["10.96.0.10", "fd00::a"],
        searches=["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        options=["ndots:5", "timeout:2"],
    )

    assert render_resolv_conf(dns, host_file) == (
        "nameserver 10.96.0.10\n"
        "nameserver fd00::a\n"
        "search ns.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5 timeout:2\n"
    )


def test_only_the_given_parts_are_rendered(host_file: Path) -> None:
    assert render_resolv_conf(DnsConfig(servers=["1.1.1.1"]), host_file) == "nameserver 1.1.1.1\n"
    assert render_resolv_conf(DnsConfig(searches=["a.b"]), host_file) == "search a.b\n"
    assert render_resolv_conf(DnsConfig(options=["rotate"]), host_file) == "options rotate\n"


def test_without_dns_config_the_pod_gets_the_host_file(host_file: Path) -> None:
    assert render_resolv_conf(None, host_file) == HOST_TEXT


def test_empty_dns_config_copies_the_host_file(host_file: Path) -> None:
    assert render_resolv_conf(DnsConfig(), host_file) == HOST_TEXT


def test_missing_host_file_gives_an_empty_resolv_conf(tmp_path: Path) -> None:
    assert render_resolv_conf(None, tmp_path / "absent") == ""


@pytest.mark.parametrize(
    "dns",
    [
        DnsConfig(servers=["1.1.1.1\nnameserver 6.6.6.6"]),
        DnsConfig(servers=["1.1.1.1"], searches=["a.local\r"]),
        DnsConfig(options=["ndots:1\noptions debug"]),
        DnsConfig(servers=[""]),
        DnsConfig(searches=["   "]),
    ],
)
def test_entry_that_is_empty_or_spans_lines_is_refused(dns: DnsConfig, host_file: Path) -> None:
    with pytest.raises(InvalidArgument, match="dns_config entry"):
        render_resolv_conf(dns, host_file)
