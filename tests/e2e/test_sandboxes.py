"""Pod sandboxes through the CRI: lifecycle, names, filters, and their effects on the kernel."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import grpc

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.kernel import (
    CGROUP_FS,
    is_alive,
    mount_at,
    mounts_under,
    ns_inode_of_pin,
    ns_inode_of_process,
    ns_pid_chain,
    nsenter,
    process_id,
    process_name,
)
from tests.e2e.pods import assert_rpc_error, pod_config
from tests.waiting import wait_until

MIB = 1024 * 1024


def _pin_is_mounted(pin: str) -> bool:
    return mount_at(pin) is not None


# --- status round trip ----------------------------------------------------------------------


def test_status_returns_metadata_labels_and_annotations_exactly(agent: Agent) -> None:
    labels = {"app": "web", "io.kubernetes.pod.name": "web-0", "empty": ""}
    annotations = {
        "kubernetes.io/config.seen": "2026-11-28T12:00:00.000000000Z",
        "multi": "line one\nline two",
        "unicode": "héllo ⚓",
    }
    config = pod_config(labels=labels, annotations=annotations, attempt=3)
    pod_id = agent.run_pod(config)

    status = agent.pod_status(pod_id)

    assert status.id == pod_id
    assert status.metadata == config.metadata
    assert status.metadata.attempt == 3
    assert dict(status.labels) == labels
    assert dict(status.annotations) == annotations


def test_list_returns_metadata_labels_and_annotations_exactly(agent: Agent) -> None:
    config = pod_config(labels={"tier": "db"}, annotations={"note": "a=b,c"})
    pod_id = agent.run_pod(config)

    [pod] = agent.list_pods()

    assert pod.id == pod_id
    assert pod.metadata == config.metadata
    assert dict(pod.labels) == {"tier": "db"}
    assert dict(pod.annotations) == {"note": "a=b,c"}
    assert pod.state == pb.SANDBOX_READY


def test_created_at_is_in_nanoseconds(agent: Agent) -> None:
    before_ns = time.time_ns()
    pod_id = agent.run_pod(pod_config())
    after_ns = time.time_ns()

    created_at_ns = agent.pod_status(pod_id).created_at

    assert before_ns <= created_at_ns <= after_ns
    [listed] = agent.list_pods()
    assert listed.created_at == created_at_ns


def test_a_new_pod_is_ready(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    assert agent.pod_status(pod_id).state == pb.SANDBOX_READY


def test_sandbox_ids_are_64_hex_digits_and_unique(agent: Agent) -> None:
    ids = [agent.run_pod(pod_config()) for _ in range(3)]

    assert len(set(ids)) == 3
    for pod_id in ids:
        assert len(pod_id) == 64
        int(pod_id, 16)


def test_runtime_handler_defaults_to_crun(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    assert agent.pod_status(pod_id).runtime_handler == "crun"
    [listed] = agent.list_pods()
    assert listed.runtime_handler == "crun"


def test_runtime_handler_runc_is_accepted(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(), runtime_handler="runc")

    assert agent.pod_status(pod_id).runtime_handler == "runc"


def test_status_reports_the_namespace_modes(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD))

    options = agent.pod_status(pod_id).linux.namespaces.options

    assert (options.network, options.pid, options.ipc) == (pb.NODE, pb.CONTAINER, pb.POD)


def test_verbose_status_lists_pins_cgroup_and_pids(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    info = agent.pod_info(pod_id)

    assert set(info["pins"]) == {"net", "ipc", "uts"}
    for kind, pin in info["pins"].items():
        assert Path(pin).is_relative_to(agent.run_dir), pin
        assert _pin_is_mounted(pin), f"{kind} pin {pin} is not mounted"
    assert info["cgroup"] == f"{agent.cgroup_parent}/moorage-{pod_id}"
    assert isinstance(info["pids"]["infra"], int)
    assert process_id(info["pids"]["infra"]) is not None


def test_status_without_verbose_has_no_info(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    response = agent.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))

    assert dict(response.info) == {}
    assert response.status.id == pod_id


# --- names -----------------------------------------------------------------------------------


def test_a_reserved_name_is_refused_naming_its_holder(agent: Agent) -> None:
    config = pod_config()
    first_id = agent.run_pod(config)

    assert_rpc_error(
        lambda: agent.run_pod(config),
        grpc.StatusCode.ALREADY_EXISTS,
        first_id,
        config.metadata.name,
    )
    assert agent.list_pod_ids() == {first_id}


def test_a_stopped_pod_keeps_its_name_reserved(agent: Agent) -> None:
    config = pod_config()
    first_id = agent.run_pod(config)
    agent.stop_pod(first_id)

    assert_rpc_error(lambda: agent.run_pod(config), grpc.StatusCode.ALREADY_EXISTS, first_id)


def test_a_removed_pods_name_can_be_reused(agent: Agent) -> None:
    config = pod_config()
    first_id = agent.run_pod(config)
    agent.remove_pod(first_id)

    second_id = agent.run_pod(config)

    assert second_id != first_id
    assert agent.pod_status(second_id).state == pb.SANDBOX_READY


def test_a_new_attempt_of_the_same_pod_gets_its_own_name(agent: Agent) -> None:
    config = pod_config()
    first_id = agent.run_pod(config)
    agent.stop_pod(first_id)
    retry = pb.PodSandboxConfig()
    retry.CopyFrom(config)
    retry.metadata.attempt = 1

    second_id = agent.run_pod(retry)

    assert agent.list_pod_ids() == {first_id, second_id}


# --- stop and remove -------------------------------------------------------------------------

UNKNOWN_ID = "f" * 64


def test_stopping_an_unknown_sandbox_succeeds(agent: Agent) -> None:
    agent.stop_pod(UNKNOWN_ID)


def test_removing_an_unknown_sandbox_succeeds(agent: Agent) -> None:
    agent.remove_pod(UNKNOWN_ID)


def test_status_of_an_unknown_sandbox_is_not_found(agent: Agent) -> None:
    assert_rpc_error(lambda: agent.pod_status(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND, UNKNOWN_ID)


def test_status_accepts_a_unique_id_prefix(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    assert agent.pod_status(pod_id[:12]).id == pod_id


def test_stopping_a_pod_ends_its_infra_and_releases_its_namespaces(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    info = agent.pod_info(pod_id)
    infra = process_id(info["pids"]["infra"])
    assert infra is not None and is_alive(infra)

    agent.stop_pod(pod_id)

    assert agent.pod_status(pod_id).state == pb.SANDBOX_NOTREADY
    assert wait_until(lambda: not is_alive(infra))
    for pin in info["pins"].values():
        assert not _pin_is_mounted(pin), pin
    assert mount_at(info["shm"]) is None
    assert agent.list_pod_ids() == {pod_id}


def test_stopping_twice_succeeds(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    agent.stop_pod(pod_id)
    agent.stop_pod(pod_id)

    assert agent.pod_status(pod_id).state == pb.SANDBOX_NOTREADY


def test_removing_a_ready_pod_stops_it_first(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    info = agent.pod_info(pod_id)
    infra = process_id(info["pids"]["infra"])
    assert infra is not None and is_alive(infra)

    agent.remove_pod(pod_id)

    assert wait_until(lambda: not is_alive(infra))
    for pin in info["pins"].values():
        assert not _pin_is_mounted(pin), pin
        assert not Path(pin).exists(), pin
    assert mounts_under(agent.run_dir) == []
    assert not any((root / info["cgroup"].strip("/")).exists() for root in CGROUP_FS.iterdir())
    assert agent.list_pod_ids() == set()
    assert_rpc_error(lambda: agent.pod_status(pod_id), grpc.StatusCode.NOT_FOUND)


def test_removing_twice_succeeds(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    agent.remove_pod(pod_id)
    agent.remove_pod(pod_id)

    assert agent.list_pod_ids() == set()


def test_stop_and_remove_accept_a_unique_id_prefix(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    agent.stop_pod(pod_id[:10])
    assert agent.pod_status(pod_id).state == pb.SANDBOX_NOTREADY
    agent.remove_pod(pod_id[:10])

    assert agent.list_pod_ids() == set()


# --- ListPodSandbox filters ------------------------------------------------------------------


def test_list_filters_by_id(agent: Agent) -> None:
    ids = [agent.run_pod(pod_config()) for _ in range(3)]

    assert agent.list_pod_ids(pb.PodSandboxFilter(id=ids[1])) == {ids[1]}
    assert agent.list_pod_ids(pb.PodSandboxFilter(id=UNKNOWN_ID)) == set()


def test_list_filters_by_unique_id_prefix(agent: Agent) -> None:
    ids = [agent.run_pod(pod_config()) for _ in range(3)]
    # The shortest prefix of ids[2] that no other id shares.
    length = next(
        n for n in range(1, 65) if not any(other.startswith(ids[2][:n]) for other in ids[:2])
    )

    assert agent.list_pod_ids(pb.PodSandboxFilter(id=ids[2][:length])) == {ids[2]}


def test_list_filters_by_state(agent: Agent) -> None:
    ready_id = agent.run_pod(pod_config())
    stopped_id = agent.run_pod(pod_config())
    agent.stop_pod(stopped_id)

    def with_state(state: Any) -> set[str]:
        return agent.list_pod_ids(pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=state)))

    assert with_state(pb.SANDBOX_READY) == {ready_id}
    assert with_state(pb.SANDBOX_NOTREADY) == {stopped_id}
    assert agent.list_pod_ids() == {ready_id, stopped_id}


def test_list_filters_by_label_selector_matching_all_labels(agent: Agent) -> None:
    web_prod = agent.run_pod(pod_config(labels={"app": "web", "env": "prod"}))
    web_dev = agent.run_pod(pod_config(labels={"app": "web", "env": "dev"}))
    db_prod = agent.run_pod(pod_config(labels={"app": "db", "env": "prod"}))

    def selected(selector: dict[str, str]) -> set[str]:
        return agent.list_pod_ids(pb.PodSandboxFilter(label_selector=selector))

    assert selected({"app": "web"}) == {web_prod, web_dev}
    assert selected({"env": "prod"}) == {web_prod, db_prod}
    assert selected({"app": "web", "env": "prod"}) == {web_prod}
    assert selected({"app": "web", "env": "test"}) == set()
    assert selected({"missing": "label"}) == set()


def test_list_combines_filters(agent: Agent) -> None:
    ready = agent.run_pod(pod_config(labels={"app": "web"}))
    stopped = agent.run_pod(pod_config(labels={"app": "web"}))
    agent.stop_pod(stopped)

    flt = pb.PodSandboxFilter(
        state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY), label_selector={"app": "web"}
    )
    assert agent.list_pod_ids(flt) == {ready}
    flt = pb.PodSandboxFilter(id=stopped, state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
    assert agent.list_pod_ids(flt) == set()


# --- kernel effects, checked from outside the agent ------------------------------------------


def test_hostname_is_set_in_the_pods_uts_namespace(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(hostname="e2e-host-a"))
    pin = agent.pod_info(pod_id)["pins"]["uts"]

    assert nsenter([f"--uts={pin}"], ["hostname"]).strip() == "e2e-host-a"
    assert socket.gethostname() != "e2e-host-a"


def test_loopback_is_up_in_the_pods_network_namespace(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    pin = agent.pod_info(pod_id)["pins"]["net"]

    link = nsenter([f"--net={pin}"], ["ip", "-o", "link", "show", "lo"])

    assert "UP" in link.split("<", 1)[1].split(">", 1)[0].split(","), link
    links = nsenter([f"--net={pin}"], ["ip", "-o", "link", "show"]).splitlines()
    assert [line.split(":")[1].strip().split("@")[0] for line in links] == ["lo", "eth0"]


def _host_sysctl(relative: str) -> str:
    return (Path("/proc/sys") / relative).read_text().strip()


def test_net_sysctl_is_applied_inside_the_pod_only(agent: Agent) -> None:
    relative = "net/ipv4/ip_unprivileged_port_start"
    host_before = _host_sysctl(relative)
    value = "1000" if host_before != "1000" else "1001"
    pod_id = agent.run_pod(pod_config(sysctls={"net.ipv4.ip_unprivileged_port_start": value}))
    pin = agent.pod_info(pod_id)["pins"]["net"]

    inside = nsenter([f"--net={pin}"], ["cat", f"/proc/sys/{relative}"]).strip()

    assert inside == value
    assert _host_sysctl(relative) == host_before


def test_ipc_sysctl_is_applied_inside_the_pod_only(agent: Agent) -> None:
    relative = "kernel/shm_rmid_forced"
    host_before = _host_sysctl(relative)
    value = "0" if host_before == "1" else "1"
    pod_id = agent.run_pod(pod_config(sysctls={"kernel.shm_rmid_forced": value}))
    pin = agent.pod_info(pod_id)["pins"]["ipc"]

    inside = nsenter([f"--ipc={pin}"], ["cat", f"/proc/sys/{relative}"]).strip()

    assert inside == value
    assert _host_sysctl(relative) == host_before


def test_slash_separated_sysctl_names_are_accepted(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(sysctls={"net/ipv4/ip_unprivileged_port_start": "1002"}))
    pin = agent.pod_info(pod_id)["pins"]["net"]

    inside = nsenter([f"--net={pin}"], ["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"])

    assert inside.strip() == "1002"


def test_resolv_conf_is_rendered_from_the_dns_config(agent: Agent) -> None:
    dns = pb.DNSConfig(
        servers=["10.96.0.10", "10.96.0.11"],
        searches=["default.svc.cluster.local", "svc.cluster.local"],
        options=["ndots:5", "timeout:2"],
    )
    pod_id = agent.run_pod(pod_config(dns=dns))
    path = Path(agent.pod_info(pod_id)["resolv_conf"])
    assert path.is_relative_to(agent.root_dir)

    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]

    assert [words[1:] for words in lines if words[0] == "nameserver"] == [
        ["10.96.0.10"],
        ["10.96.0.11"],
    ]
    assert [words[1:] for words in lines if words[0] == "search"] == [
        ["default.svc.cluster.local", "svc.cluster.local"]
    ]
    assert [words[1:] for words in lines if words[0] == "options"] == [["ndots:5", "timeout:2"]]


def test_resolv_conf_is_the_hosts_without_a_dns_config(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())

    path = Path(agent.pod_info(pod_id)["resolv_conf"])

    assert path.read_text() == Path("/etc/resolv.conf").read_text()


def test_each_pod_gets_a_64_mib_shm_tmpfs(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    shm = agent.pod_info(pod_id)["shm"]
    other_shm = agent.pod_info(agent.run_pod(pod_config()))["shm"]

    mount = mount_at(shm)

    assert mount is not None, f"no mount at {shm}"
    _, _, fstype, options = mount
    assert fstype == "tmpfs"
    assert f"size={64 * MIB // 1024}k" in options.split(","), options
    assert Path(shm).is_relative_to(agent.run_dir)
    assert other_shm != shm
    assert mount_at(other_shm) is not None


def test_pod_cgroup_is_created_under_the_configured_parent(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    cgroup = agent.pod_info(pod_id)["cgroup"]

    assert cgroup.startswith(agent.cgroup_parent + "/")
    for controller in ("memory", "pids", "cpu"):
        assert (CGROUP_FS / controller / cgroup.strip("/")).is_dir(), controller


def test_pod_with_a_shared_pid_namespace_runs_an_infra_process_as_its_pid_1(
    agent: Agent,
) -> None:
    pod_id = agent.run_pod(pod_config(pid=pb.POD))
    info = agent.pod_info(pod_id)
    infra_pid = info["pids"]["infra"]

    chain = ns_pid_chain(infra_pid)
    assert chain[0] == infra_pid
    assert len(chain) == 2
    assert chain[-1] == 1
    assert process_name(infra_pid) == "catatonit"
    for kind in ("net", "ipc", "uts"):
        assert ns_inode_of_process(infra_pid, kind) == ns_inode_of_pin(info["pins"][kind]), kind
    procs = (CGROUP_FS / "pids" / info["cgroup"].strip("/") / "cgroup.procs").read_text()
    assert str(infra_pid) in procs.split()


def test_pod_without_a_shared_pid_namespace_has_no_infra_process(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(pid=pb.CONTAINER))
    info = agent.pod_info(pod_id)

    assert info["pids"] == {}
    assert set(info["pins"]) == {"net", "ipc", "uts"}
    assert agent.pod_status(pod_id).state == pb.SANDBOX_READY


def test_host_network_pod_uses_the_hosts_network_and_hostname(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(network=pb.NODE, hostname="ignored-name"))
    info = agent.pod_info(pod_id)
    infra_pid = info["pids"]["infra"]

    assert set(info["pins"]) == {"ipc"}
    assert ns_inode_of_process(infra_pid, "net") == ns_inode_of_process(os.getpid(), "net")
    assert ns_inode_of_process(infra_pid, "uts") == ns_inode_of_process(os.getpid(), "uts")
    hostname = nsenter([f"--target={infra_pid}", "--uts"], ["hostname"]).strip()
    assert hostname == socket.gethostname()


def test_host_ipc_pod_has_no_ipc_pin_and_no_shm_mount(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(ipc=pb.NODE))
    info = agent.pod_info(pod_id)

    assert set(info["pins"]) == {"net", "uts"}
    assert info["shm"] == ""
    assert not [m for m in mounts_under(agent.run_dir) if m.endswith("/shm")]
    assert ns_inode_of_process(info["pids"]["infra"], "ipc") == ns_inode_of_process(
        os.getpid(), "ipc"
    )


def test_pod_cgroup_is_created_under_the_pods_own_cgroup_parent(agent: Agent) -> None:
    config = pod_config()
    config.linux.cgroup_parent = f"{agent.cgroup_parent}/kubepods/burstable"
    pod_id = agent.run_pod(config)
    info = agent.pod_info(pod_id)

    assert info["cgroup"] == f"{agent.cgroup_parent}/kubepods/burstable/moorage-{pod_id}"
    relative = info["cgroup"].strip("/")
    for controller in ("memory", "pids", "cpuset"):
        assert (CGROUP_FS / controller / relative).is_dir(), controller
    assert (CGROUP_FS / "cpuset" / relative / "cpuset.cpus").read_text().strip()
    procs = (CGROUP_FS / "memory" / relative / "cgroup.procs").read_text().split()
    assert str(info["pids"]["infra"]) in procs
