"""Merged NRI adjustments applied to the OCI spec the project's own builder makes, adjustments
this node cannot make refused, and NRI resource updates applied to Moorage's resources."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from runtime.containers.model import ContainerConfig, Device, Mount
from runtime.nri.adjust import collect
from runtime.nri.apply import UnsupportedAdjustment, apply_adjustment, update_resources
from runtime.nri.model import UnrepresentableResources
from runtime.nri.proto import api_pb2
from runtime.resources import Resources
from tests.unit import builders

Adjustment = api_pb2.ContainerAdjustment
LinuxAdjustment = api_pb2.LinuxContainerAdjustment


def built_spec() -> dict[str, Any]:
    config = ContainerConfig(
        name="app",
        image="registry.test/app:1",
        envs={"MODE": "prod", "LEVEL": "info"},
        annotations={"team": "a", "note": "x"},
        mounts=[Mount("/data", "/srv/data", readonly=True)],
        devices=[Device("/dev/xnull", "/dev/null", "rw")],
        resources=Resources(cpu_shares=256, memory_limit_bytes=1 << 28),
    )
    pod = builders.sandbox("sb1")
    return builders.oci_spec(config, replace(pod, pins={**pod.pins, "uts": "/u"}))


def names(env: list[str]) -> list[str]:
    return [entry.partition("=")[0] for entry in env]


def test_the_spec_given_is_left_as_it_was() -> None:
    spec = built_spec()
    before = copy.deepcopy(spec)
    adjusted = apply_adjustment(spec, Adjustment(args=["/bin/other"], annotations={"k": "v"}))
    assert spec == before
    assert adjusted["process"]["args"] == ["/bin/other"]


def test_env_set_again_keeps_its_place_new_goes_last_removed_goes() -> None:
    spec = built_spec()
    env = spec["process"]["env"]
    adjustment = Adjustment(
        env=[
            api_pb2.KeyValue(key="MODE", value="debug"),
            api_pb2.KeyValue(key="NEW", value="1"),
            api_pb2.KeyValue(key="-LEVEL"),
            api_pb2.KeyValue(key="-ABSENT"),
        ]
    )
    adjusted = apply_adjustment(spec, adjustment)["process"]["env"]
    expected = [n for n in names(env) if n != "LEVEL"] + ["NEW"]
    assert names(adjusted) == expected
    assert adjusted[names(adjusted).index("MODE")] == "MODE=debug"


def test_annotations_and_sysctl_are_set_and_removed() -> None:
    adjustment = Adjustment(
        annotations={"-note": "", "team": "b", "new": "1"},
        linux=LinuxAdjustment(sysctl={"net.core.somaxconn": "1024", "-kernel.absent": ""}),
    )
    adjusted = apply_adjustment(built_spec(), adjustment)
    annotations = adjusted["annotations"]
    assert "note" not in annotations
    assert (annotations["team"], annotations["new"]) == ("b", "1")
    assert annotations["io.kubernetes.cri.container-name"] == "app"
    assert adjusted["linux"]["sysctl"] == {"net.core.somaxconn": "1024"}


def test_mounts_replace_by_destination_and_end_up_parents_first() -> None:
    spec = built_spec()
    adjustment = Adjustment(
        mounts=[
            api_pb2.Mount(destination="/data/sub", type="bind", source="/x", options=["rbind"]),
            api_pb2.Mount(destination="/data", type="bind", source="/other", options=["ro"]),
            api_pb2.Mount(destination="/a", type="tmpfs", source="tmpfs"),
            api_pb2.Mount(destination="-/etc/resolv.conf"),
        ]
    )
    mounts = apply_adjustment(spec, adjustment)["mounts"]
    destinations = [m["destination"] for m in mounts]
    assert destinations.count("/data") == 1
    assert "/etc/resolv.conf" not in destinations
    data = next(m for m in mounts if m["destination"] == "/data")
    assert (data["source"], data["options"]) == ("/other", ["ro"])
    depth = [d.count("/") for d in destinations]
    assert depth == sorted(depth)
    assert destinations.index("/a") < destinations.index("/data") < destinations.index("/data/sub")
    assert len(mounts) == len(spec["mounts"]) + 1


@pytest.mark.parametrize(
    ("options", "before", "expected"),
    [
        (["rbind", "rshared"], "rslave", "rshared"),
        (["rbind", "rslave"], None, "rslave"),
        (["rbind", "rslave"], "rshared", "rshared"),
        (["rbind", "rprivate"], None, None),
    ],
)
def test_propagating_mounts_make_the_rootfs_propagate(
    options: list[str], before: str | None, expected: str | None
) -> None:
    spec = built_spec()
    if before is not None:
        spec["linux"]["rootfsPropagation"] = before
    mount = api_pb2.Mount(destination="/shared", type="bind", source="/mnt", options=options)
    adjusted = apply_adjustment(spec, Adjustment(mounts=[mount]))
    assert adjusted["linux"].get("rootfsPropagation") == expected


def test_devices_are_created_and_allowed_removed_ones_dropped() -> None:
    spec = built_spec()
    rules_before = len(spec["linux"]["resources"]["devices"])
    adjustment = Adjustment(
        linux=LinuxAdjustment(
            devices=[
                api_pb2.LinuxDevice(
                    path="/dev/fuse",
                    type="c",
                    major=10,
                    minor=229,
                    file_mode=api_pb2.OptionalFileMode(value=0o666),
                    uid=api_pb2.OptionalUInt32(value=0),
                ),
                api_pb2.LinuxDevice(path="/dev/loop0", type="b", major=7, minor=0),
                api_pb2.LinuxDevice(path="-/dev/xnull"),
            ]
        )
    )
    linux = apply_adjustment(spec, adjustment)["linux"]
    assert linux["devices"] == [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0},
        {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0},
    ]
    rules = linux["resources"]["devices"]
    assert len(rules) == rules_before + 2
    assert rules[-2:] == [
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
        {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rwm"},
    ]


def test_hooks_are_appended_per_kind() -> None:
    spec = built_spec()
    spec["hooks"] = {"poststop": [{"path": "/bin/existing"}]}
    hooks = api_pb2.Hooks(
        create_runtime=[
            api_pb2.Hook(path="/bin/a", args=["a", "1"], timeout=api_pb2.OptionalInt(value=3))
        ],
        poststop=[api_pb2.Hook(path="/bin/b", env=["X=1"])],
        start_container=[api_pb2.Hook(path="/bin/c")],
    )
    adjusted = apply_adjustment(spec, Adjustment(hooks=hooks))["hooks"]
    assert adjusted == {
        "poststop": [{"path": "/bin/existing"}, {"path": "/bin/b", "env": ["X=1"]}],
        "createRuntime": [{"path": "/bin/a", "args": ["a", "1"], "timeout": 3}],
        "startContainer": [{"path": "/bin/c"}],
    }


def test_resources_are_set_field_by_field() -> None:
    spec = built_spec()
    rules = spec["linux"]["resources"]["devices"]
    spec["linux"]["resources"]["hugepageLimits"] = [{"pageSize": "2MB", "limit": 1}]
    resources = api_pb2.LinuxResources(
        memory=api_pb2.LinuxMemory(
            limit=api_pb2.OptionalInt64(value=1 << 30),
            reservation=api_pb2.OptionalInt64(value=1 << 29),
            swappiness=api_pb2.OptionalUInt64(value=0),
            disable_oom_killer=api_pb2.OptionalBool(value=True),
        ),
        cpu=api_pb2.LinuxCPU(
            quota=api_pb2.OptionalInt64(value=-1),
            period=api_pb2.OptionalUInt64(value=100_000),
            realtime_runtime=api_pb2.OptionalInt64(value=950),
            cpus="0-1",
            mems="0",
        ),
        hugepage_limits=[
            api_pb2.HugepageLimit(page_size="2MB", limit=4 << 20),
            api_pb2.HugepageLimit(page_size="1GB", limit=0),
        ],
        unified={"memory.high": "900000000"},
        pids=api_pb2.LinuxPids(limit=512),
        devices=[
            api_pb2.LinuxDeviceCgroup(
                allow=True, type="c", major=api_pb2.OptionalInt64(value=10), access="rwm"
            )
        ],
        blockio_class=api_pb2.OptionalString(value=""),
    )
    spec["linux"]["resources"]["blockIO"] = {"weight": 10}
    adjusted = apply_adjustment(spec, Adjustment(linux=LinuxAdjustment(resources=resources)))
    oci = adjusted["linux"]["resources"]
    assert oci["memory"] == {
        "limit": 1 << 30,
        # A limit without a swap limit, as upstream: no swap beyond it.
        "swap": 1 << 30,
        "reservation": 1 << 29,
        "swappiness": 0,
        "disableOOMKiller": True,
    }
    assert oci["cpu"] == {
        "shares": 256,
        "quota": -1,
        "period": 100_000,
        "realtimeRuntime": 950,
        "cpus": "0-1",
        "mems": "0",
    }
    assert oci["hugepageLimits"] == [
        {"pageSize": "2MB", "limit": 4 << 20},
        {"pageSize": "1GB", "limit": 0},
    ]
    assert oci["unified"] == {"memory.high": "900000000"}
    assert oci["pids"] == {"limit": 512}
    assert oci["devices"] == [*rules, {"allow": True, "type": "c", "major": 10, "access": "rwm"}]
    assert "blockIO" not in oci


def test_an_explicit_swap_limit_is_kept() -> None:
    memory = api_pb2.LinuxMemory(
        limit=api_pb2.OptionalInt64(value=100), swap=api_pb2.OptionalInt64(value=-1)
    )
    adjustment = Adjustment(linux=LinuxAdjustment(resources=api_pb2.LinuxResources(memory=memory)))
    oci = apply_adjustment(built_spec(), adjustment)["linux"]["resources"]["memory"]
    assert oci == {"limit": 100, "swap": -1}


def test_process_and_linux_fields_are_set() -> None:
    spec = built_spec()
    spec["linux"]["intelRdt"] = {"closID": "old"}
    seccomp = api_pb2.LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        architectures=["SCMP_ARCH_X86_64"],
        syscalls=[
            api_pb2.LinuxSyscall(
                names=["ptrace"], action="SCMP_ACT_ERRNO", errno_ret=api_pb2.OptionalUInt32(value=1)
            )
        ],
    )
    adjustment = Adjustment(
        rlimits=[
            api_pb2.POSIXRlimit(type="RLIMIT_NOFILE", hard=4096, soft=2048),
            api_pb2.POSIXRlimit(type="RLIMIT_CORE", hard=0, soft=0),
        ],
        linux=LinuxAdjustment(
            cgroups_path="/custom/c1",
            oom_score_adj=api_pb2.OptionalInt(value=-100),
            seccomp_policy=seccomp,
            namespaces=[
                api_pb2.LinuxNamespace(type="network", path="/run/netns/other"),
                api_pb2.LinuxNamespace(type="-ipc"),
                api_pb2.LinuxNamespace(type="time"),
            ],
            net_devices={"-eth9": api_pb2.LinuxNetDevice()},
            rdt=api_pb2.LinuxRdt(remove=True),
        ),
    )
    before = {n["type"] for n in spec["linux"]["namespaces"]}
    adjusted = apply_adjustment(spec, adjustment)
    process, linux = adjusted["process"], adjusted["linux"]
    assert process["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 2048},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
    ]
    assert process["oomScoreAdj"] == -100
    assert linux["cgroupsPath"] == "/custom/c1"
    assert linux["seccomp"] == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    namespaces = {n["type"]: n.get("path") for n in linux["namespaces"]}
    assert set(namespaces) == (before - {"ipc"}) | {"time"}
    assert namespaces["network"] == "/run/netns/other"
    assert namespaces["time"] is None
    assert "intelRdt" not in linux


UNSUPPORTED: list[tuple[Adjustment, str]] = [
    (Adjustment(CDI_devices=[api_pb2.CDIDevice(name="vendor.com/gpu=0")]), "vendor.com/gpu=0"),
    (Adjustment(linux=LinuxAdjustment(io_priority=api_pb2.LinuxIOPriority())), "ioPriority"),
    (Adjustment(linux=LinuxAdjustment(scheduler=api_pb2.LinuxScheduler())), "scheduler"),
    (
        Adjustment(linux=LinuxAdjustment(memory_policy=api_pb2.LinuxMemoryPolicy())),
        "memoryPolicy",
    ),
    (
        Adjustment(linux=LinuxAdjustment(net_devices={"eth1": api_pb2.LinuxNetDevice()})),
        "netDevices",
    ),
    (
        Adjustment(
            linux=LinuxAdjustment(
                rdt=api_pb2.LinuxRdt(schemata=api_pb2.OptionalRepeatedString(value=["L3:0=f"]))
            )
        ),
        "RDT",
    ),
    (
        Adjustment(
            linux=LinuxAdjustment(
                resources=api_pb2.LinuxResources(rdt_class=api_pb2.OptionalString(value="gold"))
            )
        ),
        "rdt_class 'gold'",
    ),
    (
        Adjustment(
            linux=LinuxAdjustment(
                resources=api_pb2.LinuxResources(blockio_class=api_pb2.OptionalString(value="hi"))
            )
        ),
        "blockio_class 'hi'",
    ),
]


@pytest.mark.parametrize(("adjustment", "named"), UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_adjustments_this_node_cannot_make_are_refused_naming_them(
    adjustment: Adjustment, named: str
) -> None:
    with pytest.raises(UnsupportedAdjustment, match=named):
        apply_adjustment(built_spec(), adjustment)


def test_merged_replies_of_plugins_apply_to_the_spec() -> None:
    def env(key: str, value: str = "") -> api_pb2.CreateContainerResponse:
        return api_pb2.CreateContainerResponse(
            adjust=Adjustment(env=[api_pb2.KeyValue(key=key, value=value)])
        )

    merged = collect("c1", [("a", env("ADDED", "1")), ("b", env("-ADDED")), ("c", env("-MODE"))])
    adjusted = apply_adjustment(built_spec(), merged.adjustment)["process"]["env"]
    assert "ADDED" not in names(adjusted)
    assert "MODE" not in names(adjusted)
    assert "LEVEL=info" in adjusted


def test_an_update_changes_only_what_it_sets() -> None:
    current = Resources(
        cpu_shares=256,
        memory_limit_bytes=1 << 28,
        oom_score_adj=100,
        hugepage_limits={"2MB": 1},
        unified={"a": "1"},
    )
    update = api_pb2.LinuxResources(
        cpu=api_pb2.LinuxCPU(quota=api_pb2.OptionalInt64(value=20_000), cpus="2"),
        memory=api_pb2.LinuxMemory(limit=api_pb2.OptionalInt64(value=1 << 29)),
        hugepage_limits=[api_pb2.HugepageLimit(page_size="1GB", limit=0)],
        unified={"b": "2"},
    )
    assert update_resources(current, update) == Resources(
        cpu_shares=256,
        cpu_quota=20_000,
        cpuset_cpus="2",
        memory_limit_bytes=1 << 29,
        oom_score_adj=100,
        hugepage_limits={"2MB": 1, "1GB": 0},
        unified={"a": "1", "b": "2"},
    )
    assert current.unified == {"a": "1"}


def test_an_update_moorage_cannot_hold_is_refused() -> None:
    with pytest.raises(UnrepresentableResources, match="pids"):
        update_resources(Resources(), api_pb2.LinuxResources(pids=api_pb2.LinuxPids(limit=5)))
