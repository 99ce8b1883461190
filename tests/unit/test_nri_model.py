"""Moorage's sandboxes, containers and resources as NRI messages: from the CRI model alone and
from the OCI spec the project's own builder makes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runtime.containers.model import (
    ContainerConfig,
    ContainerSecurity,
    ContainerState,
    Device,
    Mount,
    Propagation,
    Seccomp,
    SeccompKind,
)
from runtime.nri.model import (
    UnrepresentableResources,
    oci_resources_to_nri,
    pod_sandbox,
    resources_from_nri,
    resources_to_nri,
    seccomp_to_nri,
    seccomp_to_oci,
)
from runtime.nri.model import container as nri_container
from runtime.nri.proto import api_pb2
from runtime.pods.model import InfraProcess, PodResources, Sandbox
from runtime.resources import Resources
from tests.unit import builders

RESOURCES = Resources(
    cpu_period=100_000,
    cpu_quota=50_000,
    cpu_shares=512,
    memory_limit_bytes=1 << 28,
    memory_swap_limit_bytes=1 << 29,
    cpuset_cpus="0-1",
    cpuset_mems="0",
    hugepage_limits={"2MB": 1 << 21, "1GB": 0},
    unified={"memory.high": "200000000"},
)


def pinned_pod() -> Sandbox:
    pod = builders.sandbox("sb1", infra=InfraProcess(pid=77, start_ticks=1))
    pins = {**pod.pins, "uts": "/run/moorage/utsns/sb1", "user": "/run/moorage/userns/sb1"}
    return replace(pod, pins=pins, ips=["10.0.0.5", "fd00::5"])


def test_a_pod_carries_its_identity_cgroups_namespaces_and_resources() -> None:
    pod = replace(
        pinned_pod(),
        resources=PodResources(resources=RESOURCES, overhead=Resources(cpu_shares=10)),
    )
    nri = pod_sandbox(pod)
    assert (nri.id, nri.name, nri.uid, nri.namespace) == ("sb1", "web", "uid-sb1", "default")
    assert dict(nri.labels) == {"app": "web"}
    assert dict(nri.annotations) == {"kubernetes.io/config.source": "api"}
    assert (nri.runtime_handler, nri.pid, list(nri.ips)) == ("runc", 77, ["10.0.0.5", "fd00::5"])
    assert nri.linux.cgroup_parent == "/kubepods/besteffort/poduid-sb1"
    assert nri.linux.cgroups_path == "/kubepods/moorage-sb1"
    assert {n.type: n.path for n in nri.linux.namespaces} == {
        "network": "/run/moorage/netns/sb1",
        "ipc": "/run/moorage/ipcns/sb1",
        "uts": "/run/moorage/utsns/sb1",
        "user": "/run/moorage/userns/sb1",
    }
    assert resources_from_nri(nri.linux.pod_resources) == RESOURCES
    assert nri.linux.pod_overhead.cpu.shares.value == 10


def test_a_pod_without_infra_or_resources_leaves_them_unset() -> None:
    nri = pod_sandbox(builders.sandbox("sb2"))
    assert nri.pid == 0
    assert not nri.linux.HasField("pod_resources")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ContainerState.CREATING, api_pb2.CONTAINER_UNKNOWN),
        (ContainerState.CREATED, api_pb2.CONTAINER_CREATED),
        (ContainerState.RUNNING, api_pb2.CONTAINER_RUNNING),
        (ContainerState.EXITED, api_pb2.CONTAINER_STOPPED),
        (ContainerState.UNKNOWN, api_pb2.CONTAINER_UNKNOWN),
    ],
)
def test_container_states_map_to_nris(state: ContainerState, expected: int) -> None:
    assert nri_container(replace(builders.container("c1"), state=state)).state == expected


def test_a_container_without_a_spec_is_described_by_its_cri_config() -> None:
    container = replace(
        builders.container("c1", sandbox_id="sb1"),
        state=ContainerState.EXITED,
        created_at_ns=10,
        started_at_ns=20,
        finished_at_ns=30,
        exit_code=137,
        reason="OOMKilled",
        message="out of memory",
        resources=replace(RESOURCES, oom_score_adj=-997),
    )
    nri = nri_container(container)
    assert (nri.id, nri.pod_sandbox_id, nri.name) == ("c1", "sb1", "app")
    assert (nri.created_at, nri.started_at, nri.finished_at) == (10, 20, 30)
    assert (nri.exit_code, nri.status_reason, nri.status_message) == (
        137,
        "OOMKilled",
        "out of memory",
    )
    assert nri.pid == 42
    assert (nri.image.name, nri.image.digest, nri.image.config_digest) == (
        "busybox",
        "sha256:" + "b" * 64,
        "sha256:" + "a" * 64,
    )
    assert (nri.user.uid, nri.user.gid, list(nri.user.additional_gids)) == (1000, 1000, [5, 6])
    assert list(nri.args) == ["sh", "-c", "true"]
    assert list(nri.env) == ["A=1"]
    assert dict(nri.labels) == {"tier": "web"}
    assert dict(nri.annotations) == {"note": "x"}
    data = nri.mounts[0]
    assert (data.destination, data.type, data.source) == ("/data", "bind", "/srv")
    assert list(data.options) == ["rbind", "rslave", "ro", "noexec"]
    assert resources_from_nri(nri.linux.resources) == RESOURCES
    assert nri.linux.oom_score_adj.value == -997
    profile = nri.linux.seccomp_profile
    assert (profile.profile_type, profile.localhost_ref) == (
        api_pb2.SecurityProfile.LOCALHOST,
        "/p.json",
    )


def test_a_container_with_a_spec_is_described_by_it() -> None:
    config = ContainerConfig(
        name="app",
        image="registry.test/app:1",
        envs={"MODE": "prod"},
        annotations={"team": "a"},
        mounts=[Mount("/data", "/srv/data", readonly=True, propagation=Propagation.PRIVATE)],
        devices=[Device("/dev/xnull", "/dev/null", "rw")],
        resources=replace(RESOURCES, oom_score_adj=500),
        security=ContainerSecurity(seccomp=Seccomp(SeccompKind.RUNTIME_DEFAULT)),
    )
    container = replace(builders.container("c1", sandbox_id="sb1"), config=config)
    spec = builders.oci_spec(config, pinned_pod())
    spec["hooks"] = {
        "createRuntime": [{"path": "/bin/hook", "args": ["hook", "x"], "timeout": 5}],
        "poststop": [{"path": "/bin/cleanup", "env": ["A=1"]}],
    }
    spec["linux"]["sysctl"] = {"net.core.somaxconn": "1024"}
    nri = nri_container(container, spec)

    assert list(nri.args) == ["/bin/app", "serve"]
    assert list(nri.env) == spec["process"]["env"]
    assert "MODE=prod" in nri.env
    assert "IMG=1" in nri.env
    assert dict(nri.annotations) == spec["annotations"]
    assert [m.destination for m in nri.mounts] == [m["destination"] for m in spec["mounts"]]
    data = next(m for m in nri.mounts if m.destination == "/data")
    assert (data.source, list(data.options)) == ("/srv/data", ["rbind", "rprivate", "ro"])
    (hook,) = nri.hooks.create_runtime
    assert (hook.path, list(hook.args), hook.timeout.value) == ("/bin/hook", ["hook", "x"], 5)
    assert not nri.hooks.poststop[0].HasField("timeout")
    assert list(nri.hooks.poststop[0].env) == ["A=1"]
    assert [(r.type, r.hard, r.soft) for r in nri.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert (nri.user.uid, nri.user.gid, list(nri.user.additional_gids)) == (1000, 1000, [5])
    linux = nri.linux
    assert [(n.type, n.path) for n in linux.namespaces] == [
        (n["type"], n.get("path", "")) for n in spec["linux"]["namespaces"]
    ]
    (device,) = linux.devices
    assert (device.path, device.type, device.major, device.minor) == ("/dev/xnull", "c", 1, 3)
    assert device.file_mode.value == spec["linux"]["devices"][0]["fileMode"]
    assert linux.cgroups_path == "/kubepods/moorage-sb1/c1"
    assert linux.oom_score_adj.value == 500
    assert dict(linux.sysctl) == {"net.core.somaxconn": "1024"}
    assert resources_from_nri(_without_device_rules(linux.resources)) == RESOURCES
    rules = [(r.allow, r.type, r.access) for r in linux.resources.devices]
    assert rules[0] == (False, "", "rwm")
    assert rules[-1] == (True, "c", "rw")
    assert linux.resources.devices[-1].major.value == 1
    assert not linux.resources.devices[0].HasField("major")
    assert seccomp_to_oci(linux.seccomp_policy) == spec["linux"]["seccomp"]
    assert linux.seccomp_profile.profile_type == api_pb2.SecurityProfile.RUNTIME_DEFAULT


def _without_device_rules(resources: api_pb2.LinuxResources) -> api_pb2.LinuxResources:
    copy = api_pb2.LinuxResources()
    copy.CopyFrom(resources)
    del copy.devices[:]
    return copy


def test_resources_convert_both_ways_and_unset_stays_unset() -> None:
    nri = resources_to_nri(RESOURCES)
    assert nri.cpu.quota.value == 50_000
    assert [(h.page_size, h.limit) for h in nri.hugepage_limits] == [("1GB", 0), ("2MB", 1 << 21)]
    assert resources_from_nri(nri) == RESOURCES
    empty = resources_to_nri(Resources())
    assert not empty.cpu.HasField("shares")
    assert not empty.memory.HasField("limit")
    assert resources_from_nri(empty) == Resources()


def test_resources_moorage_cannot_hold_are_refused_naming_them() -> None:
    nri = resources_to_nri(RESOURCES)
    nri.memory.reservation.value = 1 << 20
    nri.cpu.realtime_runtime.value = 1000
    nri.pids.limit = 100
    nri.blockio_class.value = "slow"
    with pytest.raises(UnrepresentableResources) as caught:
        resources_from_nri(nri)
    message = str(caught.value)
    for name in ("memory.reservation", "cpu.realtime_runtime", "pids", "blockio_class"):
        assert name in message


def test_oci_resources_keep_every_field_nri_has() -> None:
    oci = {
        "cpu": {"shares": 2, "quota": -1, "realtimeRuntime": 5, "realtimePeriod": 6},
        "memory": {
            "limit": 10,
            "reservation": 9,
            "swap": 20,
            "kernel": 1,
            "kernelTCP": 2,
            "swappiness": 60,
            "disableOOMKiller": False,
            "useHierarchy": True,
        },
        "pids": {"limit": 0},
    }
    nri = oci_resources_to_nri(oci)
    assert nri.cpu.quota.value == -1
    assert (nri.cpu.realtime_runtime.value, nri.cpu.realtime_period.value) == (5, 6)
    memory = nri.memory
    assert (memory.reservation.value, memory.kernel.value, memory.kernel_tcp.value) == (9, 1, 2)
    assert memory.swappiness.value == 60
    assert memory.HasField("disable_oom_killer")
    assert memory.use_hierarchy.value
    assert nri.HasField("pids")
    assert not nri.cpu.HasField("period")


def test_seccomp_policy_round_trips_with_errnos_and_args() -> None:
    oci = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            },
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }
    assert seccomp_to_oci(seccomp_to_nri(oci)) == oci
