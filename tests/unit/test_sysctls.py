from __future__ import annotations

from pathlib import Path

import pytest

import runtime.pods.sysctls
from runtime.errors import InvalidArgument
from runtime.pods.model import NamespaceMode, NamespaceOptions
from runtime.pods.sysctls import apply_sysctls, validate_sysctls

POD_NAMESPACES = NamespaceOptions()
HOST_NETWORK = NamespaceOptions(network=NamespaceMode.NODE)
HOST_IPC = NamespaceOptions(ipc=NamespaceMode.NODE)


def _path(name: str, ns: NamespaceOptions = POD_NAMESPACES) -> str:
    return validate_sysctls({name: "1"}, ns)[name]


# --- validate_sysctls: accepted names ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("net.core.somaxconn", "net/core/somaxconn"),
        ("net.ipv4.ip_local_port_range", "net/ipv4/ip_local_port_range"),
        ("kernel.shmmax", "kernel/shmmax"),
        ("kernel.shm_rmid_forced", "kernel/shm_rmid_forced"),
        ("kernel.msgmax", "kernel/msgmax"),
        ("kernel.msgmnb", "kernel/msgmnb"),
        ("kernel.msgmni", "kernel/msgmni"),
        ("kernel.sem", "kernel/sem"),
        ("fs.mqueue.msg_max", "fs/mqueue/msg_max"),
        ("kernel.hostname", "kernel/hostname"),
        ("kernel.domainname", "kernel/domainname"),
    ],
)
def test_namespaced_sysctl_maps_to_its_proc_sys_path(name: str, path: str) -> None:
    assert _path(name) == path


def test_slash_form_keeps_a_dot_inside_the_interface_name() -> None:
    assert _path("net/ipv4/conf/eth0.100/rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"


def test_dotted_form_writes_a_dot_inside_the_interface_name_as_slash() -> None:
    assert _path("net.ipv4.conf.eth0/100.rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"


def test_every_sysctl_of_the_pod_is_mapped() -> None:
    sysctls = {"net.core.somaxconn": "1024", "kernel.shmmax": "4096", "kernel.sem": "1 2 3 4"}

    assert validate_sysctls(sysctls, POD_NAMESPACES) == {
        "net.core.somaxconn": "net/core/somaxconn",
        "kernel.shmmax": "kernel/shmmax",
        "kernel.sem": "kernel/sem",
    }


def test_no_sysctls_map_to_nothing() -> None:
    assert validate_sysctls({}, HOST_NETWORK) == {}


def test_ipc_sysctls_are_allowed_with_the_host_network() -> None:
    assert _path("kernel.shmmax", HOST_NETWORK) == "kernel/shmmax"


def test_net_sysctls_are_allowed_with_the_host_ipc_namespace() -> None:
    assert _path("net.core.somaxconn", HOST_IPC) == "net/core/somaxconn"


# --- validate_sysctls: refused names -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["kernel.panic", "vm.swappiness", "fs.file-max", "kernel/panic", "user.max_user_namespaces"],
)
def test_non_namespaced_sysctl_is_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="not a namespaced sysctl") as raised:
        _path(name)
    assert repr(name) in str(raised.value)


@pytest.mark.parametrize("name", ["net.core.somaxconn", "net/ipv4/conf/eth0.100/rp_filter"])
def test_net_sysctl_is_refused_with_the_host_network(name: str) -> None:
    with pytest.raises(InvalidArgument, match="host network") as raised:
        _path(name, HOST_NETWORK)
    assert repr(name) in str(raised.value)


def test_uts_sysctl_is_refused_with_the_host_network() -> None:
    with pytest.raises(InvalidArgument, match="host UTS"):
        _path("kernel.hostname", HOST_NETWORK)


@pytest.mark.parametrize(
    "name", ["kernel.shmmax", "kernel.shmall", "kernel.msgmax", "kernel.sem", "fs.mqueue.msg_max"]
)
def test_ipc_sysctl_is_refused_with_the_host_ipc_namespace(name: str) -> None:
    with pytest.raises(InvalidArgument, match="host IPC"):
        _path(name, HOST_IPC)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "net..core",
        "net.core.",
        ".net.core",
        "net.ipv4...rp_filter",
        "net//ipv4",
        "net/ipv4/",
        "net.core\0.x",
    ],
)
def test_malformed_sysctl_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="not a valid sysctl name"):
        _path(name)


@pytest.mark.parametrize(
    "name", ["net/../kernel/panic", "net/ipv4/../../vm/swappiness", "net.//.kernel.panic"]
)
def test_dotdot_component_in_a_sysctl_name_is_refused(name: str) -> None:
    """Regression: a '..' path component escaped the namespaced net/ subtree of /proc/sys."""
    with pytest.raises(InvalidArgument):
        _path(name)


@pytest.mark.parametrize("value", ["1\n", "1\n2", "\n"])
def test_multi_line_value_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="single line"):
        validate_sysctls({"net.core.somaxconn": value}, POD_NAMESPACES)


def test_one_bad_sysctl_refuses_the_whole_set() -> None:
    with pytest.raises(InvalidArgument, match=r"kernel\.panic"):
        validate_sysctls({"net.core.somaxconn": "1", "kernel.panic": "1"}, POD_NAMESPACES)


# --- apply_sysctls -------------------------------------------------------------------------


@pytest.fixture
def proc_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proc-sys"
    (root / "net" / "core").mkdir(parents=True)
    (root / "net" / "core" / "somaxconn").write_text("4096\n")
    (root / "net" / "ipv4" / "conf" / "eth0.100").mkdir(parents=True)
    (root / "net" / "ipv4" / "conf" / "eth0.100" / "rp_filter").write_text("0\n")
    (root / "kernel").mkdir()
    (root / "kernel" / "shmmax").write_text("0\n")
    monkeypatch.setattr(runtime.pods.sysctls, "PROC_SYS", root)
    return root


def test_apply_writes_each_value_to_its_file(proc_sys: Path) -> None:
    values = {
        "net.core.somaxconn": "1024",
        "net/ipv4/conf/eth0.100/rp_filter": "2",
        "kernel.shmmax": "65536",
    }

    apply_sysctls(validate_sysctls(values, POD_NAMESPACES), values)

    assert (proc_sys / "net/core/somaxconn").read_text() == "1024"
    assert (proc_sys / "net/ipv4/conf/eth0.100/rp_filter").read_text() == "2"
    assert (proc_sys / "kernel/shmmax").read_text() == "65536"


def test_apply_of_a_sysctl_this_kernel_lacks_names_it(proc_sys: Path) -> None:
    values = {"net.netfilter.nf_conntrack_max": "1"}

    with pytest.raises(InvalidArgument, match=r"net\.netfilter\.nf_conntrack_max.*no such sysctl"):
        apply_sysctls(validate_sysctls(values, POD_NAMESPACES), values)


def test_apply_reports_other_write_errors_with_name_and_value(proc_sys: Path) -> None:
    values = {"net.core": "1"}  # a directory, as a too-short name would be

    with pytest.raises(InvalidArgument, match=r"'net.core'='1'"):
        apply_sysctls({"net.core": "net/core"}, values)
