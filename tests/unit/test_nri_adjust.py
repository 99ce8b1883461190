"""Merging the CreateContainer and update replies of several NRI plugins: every field family,
conflicts between plugins, removal markers, and the owners validators are told about."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.nri.adjust import (
    AdjustmentError,
    ConflictingAdjustment,
    collect,
    collect_updates,
)
from runtime.nri.proto import api_pb2

CID = "c1"
Reply = api_pb2.CreateContainerResponse


def reply(**adjust: object) -> Reply:
    return Reply(adjust=api_pb2.ContainerAdjustment(**adjust))  # type: ignore[arg-type]


def linux(**fields: object) -> Reply:
    return reply(linux=api_pb2.LinuxContainerAdjustment(**fields))  # type: ignore[arg-type]


def resources(**fields: object) -> Reply:
    return linux(resources=api_pb2.LinuxResources(**fields))  # type: ignore[arg-type]


def simple_owner(owners: api_pb2.OwningPlugins, field: int) -> str:
    return owners.owners[CID].simple[field]


def entry_owners(owners: api_pb2.OwningPlugins, field: int) -> dict[str, str]:
    return dict(owners.owners[CID].compound[field].owners)


def test_every_field_family_merges_from_several_plugins() -> None:
    first = reply(
        annotations={"a.io/x": "1"},
        env=[api_pb2.KeyValue(key="FOO", value="1")],
        mounts=[api_pb2.Mount(destination="/cache", type="tmpfs", source="tmpfs")],
        hooks=api_pb2.Hooks(prestart=[api_pb2.Hook(path="/bin/a")]),
        rlimits=[api_pb2.POSIXRlimit(type="RLIMIT_NOFILE", hard=10, soft=5)],
        CDI_devices=[api_pb2.CDIDevice(name="vendor.com/gpu=0")],
        args=["/bin/app", "--fast"],
        linux=api_pb2.LinuxContainerAdjustment(
            devices=[api_pb2.LinuxDevice(path="/dev/fuse", type="c", major=10, minor=229)],
            resources=api_pb2.LinuxResources(
                memory=api_pb2.LinuxMemory(limit=api_pb2.OptionalInt64(value=1 << 30)),
                cpu=api_pb2.LinuxCPU(shares=api_pb2.OptionalUInt64(value=512), cpus="0-3"),
                hugepage_limits=[api_pb2.HugepageLimit(page_size="2MB", limit=1 << 22)],
                unified={"memory.high": "1000"},
                devices=[api_pb2.LinuxDeviceCgroup(allow=True, type="c", access="r")],
            ),
            cgroups_path="/custom/c1",
            oom_score_adj=api_pb2.OptionalInt(value=-500),
            sysctl={"net.core.somaxconn": "1024"},
            namespaces=[api_pb2.LinuxNamespace(type="network", path="/run/netns/x")],
        ),
    )
    second = reply(
        annotations={"b.io/y": "2"},
        env=[api_pb2.KeyValue(key="BAR", value="2")],
        mounts=[api_pb2.Mount(destination="/scratch", type="bind", source="/srv")],
        hooks=api_pb2.Hooks(prestart=[api_pb2.Hook(path="/bin/b")]),
        rlimits=[api_pb2.POSIXRlimit(type="RLIMIT_CORE", hard=0, soft=0)],
        linux=api_pb2.LinuxContainerAdjustment(
            resources=api_pb2.LinuxResources(
                memory=api_pb2.LinuxMemory(swap=api_pb2.OptionalInt64(value=2 << 30)),
                cpu=api_pb2.LinuxCPU(
                    quota=api_pb2.OptionalInt64(value=50_000),
                    period=api_pb2.OptionalUInt64(value=100_000),
                    mems="0",
                ),
                hugepage_limits=[api_pb2.HugepageLimit(page_size="1GB", limit=0)],
                unified={"cpu.idle": "1"},
                blockio_class=api_pb2.OptionalString(value="slow"),
                rdt_class=api_pb2.OptionalString(value="gold"),
                pids=api_pb2.LinuxPids(limit=100),
            ),
            io_priority=api_pb2.LinuxIOPriority(priority=3),
            seccomp_policy=api_pb2.LinuxSeccomp(default_action="SCMP_ACT_ALLOW"),
            scheduler=api_pb2.LinuxScheduler(policy=api_pb2.SCHED_BATCH, nice=5),
            memory_policy=api_pb2.LinuxMemoryPolicy(mode=api_pb2.MPOL_BIND, nodes="0"),
            net_devices={"eth1": api_pb2.LinuxNetDevice(name="net1")},
            rdt=api_pb2.LinuxRdt(clos_id=api_pb2.OptionalString(value="gold")),
            sysctl={"net.ipv4.ip_forward": "1"},
            namespaces=[api_pb2.LinuxNamespace(type="ipc")],
        ),
    )
    result = collect(CID, [("a", first), ("b", second)])
    merged = result.adjustment

    assert dict(merged.annotations) == {"a.io/x": "1", "b.io/y": "2"}
    assert [(e.key, e.value) for e in merged.env] == [("FOO", "1"), ("BAR", "2")]
    assert [m.destination for m in merged.mounts] == ["/cache", "/scratch"]
    assert [h.path for h in merged.hooks.prestart] == ["/bin/a", "/bin/b"]
    assert [r.type for r in merged.rlimits] == ["RLIMIT_NOFILE", "RLIMIT_CORE"]
    assert [d.name for d in merged.CDI_devices] == ["vendor.com/gpu=0"]
    assert list(merged.args) == ["/bin/app", "--fast"]
    lin = merged.linux
    assert [d.path for d in lin.devices] == ["/dev/fuse"]
    res = lin.resources
    assert (res.memory.limit.value, res.memory.swap.value) == (1 << 30, 2 << 30)
    assert (res.cpu.shares.value, res.cpu.quota.value, res.cpu.period.value) == (
        512,
        50_000,
        100_000,
    )
    assert (res.cpu.cpus, res.cpu.mems) == ("0-3", "0")
    assert [(h.page_size, h.limit) for h in res.hugepage_limits] == [
        ("2MB", 1 << 22),
        ("1GB", 0),
    ]
    assert dict(res.unified) == {"memory.high": "1000", "cpu.idle": "1"}
    assert (res.blockio_class.value, res.rdt_class.value, res.pids.limit) == ("slow", "gold", 100)
    assert [r.access for r in res.devices] == ["r"]
    assert lin.cgroups_path == "/custom/c1"
    assert lin.oom_score_adj.value == -500
    assert lin.io_priority.priority == 3
    assert lin.seccomp_policy.default_action == "SCMP_ACT_ALLOW"
    assert lin.scheduler.nice == 5
    assert lin.memory_policy.nodes == "0"
    assert lin.net_devices["eth1"].name == "net1"
    assert lin.rdt.clos_id.value == "gold"
    assert dict(lin.sysctl) == {"net.core.somaxconn": "1024", "net.ipv4.ip_forward": "1"}
    assert [n.type for n in lin.namespaces] == ["network", "ipc"]

    owners = result.owners
    for field, plugin in (
        (api_pb2.MemLimit, "a"),
        (api_pb2.MemSwapLimit, "b"),
        (api_pb2.CPUShares, "a"),
        (api_pb2.CPUQuota, "b"),
        (api_pb2.CPUPeriod, "b"),
        (api_pb2.CPUSetCPUs, "a"),
        (api_pb2.CPUSetMems, "b"),
        (api_pb2.PidsLimit, "b"),
        (api_pb2.BlockioClass, "b"),
        (api_pb2.RdtClass, "b"),
        (api_pb2.CgroupsPath, "a"),
        (api_pb2.OomScoreAdj, "a"),
        (api_pb2.Args, "a"),
        (api_pb2.IoPriority, "b"),
        (api_pb2.SeccompPolicy, "b"),
        (api_pb2.LinuxSched, "b"),
        (api_pb2.MemoryPolicy, "b"),
        (api_pb2.RdtClosID, "b"),
        (api_pb2.OciHooks, "a,b"),
    ):
        assert simple_owner(owners, field) == plugin, api_pb2.Field.Name(field)
    for field, expected in (
        (api_pb2.Annotations, {"a.io/x": "a", "b.io/y": "b"}),
        (api_pb2.Env, {"FOO": "a", "BAR": "b"}),
        (api_pb2.Mounts, {"/cache": "a", "/scratch": "b"}),
        (api_pb2.Devices, {"/dev/fuse": "a"}),
        (api_pb2.HugepageLimits, {"2MB": "a", "1GB": "b"}),
        (api_pb2.CgroupsUnified, {"memory.high": "a", "cpu.idle": "b"}),
        (api_pb2.Rlimits, {"RLIMIT_NOFILE": "a", "RLIMIT_CORE": "b"}),
        (api_pb2.CdiDevices, {"vendor.com/gpu=0": "a"}),
        (api_pb2.Sysctl, {"net.core.somaxconn": "a", "net.ipv4.ip_forward": "b"}),
        (api_pb2.Namespace, {"network": "a", "ipc": "b"}),
        (api_pb2.LinuxNetDevices, {"eth1": "b"}),
    ):
        assert entry_owners(owners, field) == expected, api_pb2.Field.Name(field)


def _mem(**fields: int) -> Reply:
    memory = {k: api_pb2.OptionalInt64(value=v) for k, v in fields.items()}
    return resources(memory=api_pb2.LinuxMemory(**memory))  # type: ignore[arg-type]


CONFLICTS: list[tuple[str, Callable[[], Reply], str]] = [
    ("memory limit", lambda: _mem(limit=1), "MemLimit"),
    ("memory reservation", lambda: _mem(reservation=1), "MemReservation"),
    ("swap", lambda: _mem(swap=1), "MemSwapLimit"),
    (
        "cpu shares",
        lambda: resources(cpu=api_pb2.LinuxCPU(shares=api_pb2.OptionalUInt64(value=2))),
        "CPUShares",
    ),
    (
        "cpu quota",
        lambda: resources(cpu=api_pb2.LinuxCPU(quota=api_pb2.OptionalInt64(value=2))),
        "CPUQuota",
    ),
    (
        "cpu period",
        lambda: resources(cpu=api_pb2.LinuxCPU(period=api_pb2.OptionalUInt64(value=2))),
        "CPUPeriod",
    ),
    ("cpuset cpus", lambda: resources(cpu=api_pb2.LinuxCPU(cpus="1")), "CPUSetCPUs"),
    ("cpuset mems", lambda: resources(cpu=api_pb2.LinuxCPU(mems="0")), "CPUSetMems"),
    ("pids", lambda: resources(pids=api_pb2.LinuxPids(limit=5)), "PidsLimit"),
    (
        "blockio class",
        lambda: resources(blockio_class=api_pb2.OptionalString(value="x")),
        "BlockioClass",
    ),
    ("rdt class", lambda: resources(rdt_class=api_pb2.OptionalString(value="x")), "RdtClass"),
    (
        "hugepages",
        lambda: resources(hugepage_limits=[api_pb2.HugepageLimit(page_size="2MB", limit=1)]),
        "HugepageLimits 2MB",
    ),
    ("unified", lambda: resources(unified={"io.weight": "10"}), "CgroupsUnified io.weight"),
    ("cgroups path", lambda: linux(cgroups_path="/x"), "CgroupsPath"),
    ("oom score", lambda: linux(oom_score_adj=api_pb2.OptionalInt(value=1)), "OomScoreAdj"),
    ("io priority", lambda: linux(io_priority=api_pb2.LinuxIOPriority()), "IoPriority"),
    ("seccomp", lambda: linux(seccomp_policy=api_pb2.LinuxSeccomp()), "SeccompPolicy"),
    ("scheduler", lambda: linux(scheduler=api_pb2.LinuxScheduler()), "LinuxSched"),
    ("memory policy", lambda: linux(memory_policy=api_pb2.LinuxMemoryPolicy()), "MemoryPolicy"),
    (
        "rdt clos",
        lambda: linux(rdt=api_pb2.LinuxRdt(clos_id=api_pb2.OptionalString(value="x"))),
        "RdtClosID",
    ),
    ("args", lambda: reply(args=["/bin/x"]), "Args"),
    ("annotation", lambda: reply(annotations={"k": "v"}), "Annotations k"),
    ("env", lambda: reply(env=[api_pb2.KeyValue(key="K", value="v")]), "Env K"),
    ("mount", lambda: reply(mounts=[api_pb2.Mount(destination="/m")]), "Mounts /m"),
    (
        "device",
        lambda: linux(devices=[api_pb2.LinuxDevice(path="/dev/d", type="c")]),
        "Devices /dev/d",
    ),
    (
        "rlimit",
        lambda: reply(rlimits=[api_pb2.POSIXRlimit(type="RLIMIT_AS")]),
        "Rlimits RLIMIT_AS",
    ),
    ("cdi", lambda: reply(CDI_devices=[api_pb2.CDIDevice(name="v/c=1")]), "CdiDevices v/c=1"),
    ("sysctl", lambda: linux(sysctl={"kernel.msgmax": "1"}), "Sysctl kernel.msgmax"),
    (
        "namespace",
        lambda: linux(namespaces=[api_pb2.LinuxNamespace(type="ipc")]),
        "Namespace ipc",
    ),
    (
        "net device",
        lambda: linux(net_devices={"eth1": api_pb2.LinuxNetDevice(name="n")}),
        "LinuxNetDevices eth1",
    ),
]


@pytest.mark.parametrize(("family", "make", "what"), CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_two_plugins_setting_one_field_conflict_naming_both(
    family: str, make: Callable[[], Reply], what: str
) -> None:
    with pytest.raises(ConflictingAdjustment) as caught:
        collect(CID, [("first", make()), ("other", reply()), ("second", make())])
    assert str(caught.value) == f'plugins "second" and "first" both tried to set {what}'
    assert caught.value.plugins == ("second", "first")


def test_a_plugin_may_set_an_entry_twice_the_last_wins() -> None:
    twice = reply(
        env=[api_pb2.KeyValue(key="K", value="1"), api_pb2.KeyValue(key="K", value="2")],
        mounts=[
            api_pb2.Mount(destination="/m", source="/one"),
            api_pb2.Mount(destination="/m", source="/two"),
        ],
        rlimits=[
            api_pb2.POSIXRlimit(type="RLIMIT_AS", hard=1),
            api_pb2.POSIXRlimit(type="RLIMIT_AS", hard=2),
        ],
    )
    merged = collect(CID, [("a", twice)]).adjustment
    assert [(e.key, e.value) for e in merged.env] == [("K", "2")]
    assert [m.source for m in merged.mounts] == ["/two"]
    assert [r.hard for r in merged.rlimits] == [2]


def test_hooks_from_every_plugin_are_kept_in_order() -> None:
    def hooks(path: str) -> Reply:
        return reply(hooks=api_pb2.Hooks(poststop=[api_pb2.Hook(path=path)]))

    result = collect(CID, [("a", hooks("/a")), ("b", hooks("/b")), ("a2", hooks("/c"))])
    assert [h.path for h in result.adjustment.hooks.poststop] == ["/a", "/b", "/c"]
    assert simple_owner(result.owners, api_pb2.OciHooks) == "a,b,a2"


def test_a_removal_drops_an_earlier_plugins_entry_and_owns_it() -> None:
    add = reply(
        mounts=[api_pb2.Mount(destination="/m", source="/src")],
        env=[api_pb2.KeyValue(key="K", value="v")],
        annotations={"k": "v"},
        linux=api_pb2.LinuxContainerAdjustment(
            devices=[api_pb2.LinuxDevice(path="/dev/d", type="c")], sysctl={"s": "1"}
        ),
    )
    remove = reply(
        mounts=[api_pb2.Mount(destination="-/m")],
        env=[api_pb2.KeyValue(key="-K")],
        annotations={"-k": ""},
        linux=api_pb2.LinuxContainerAdjustment(
            devices=[api_pb2.LinuxDevice(path="-/dev/d")], sysctl={"-s": ""}
        ),
    )
    result = collect(CID, [("a", add), ("b", remove)])
    merged = result.adjustment
    # The markers stay: the entries may be in the container's own spec too.
    assert [m.destination for m in merged.mounts] == ["-/m"]
    assert [e.key for e in merged.env] == ["-K"]
    assert dict(merged.annotations) == {"-k": ""}
    assert [d.path for d in merged.linux.devices] == ["-/dev/d"]
    assert dict(merged.linux.sysctl) == {"-s": ""}
    assert entry_owners(result.owners, api_pb2.Mounts) == {"/m": "-b"}
    assert entry_owners(result.owners, api_pb2.Env) == {"K": "-b"}

    with pytest.raises(ConflictingAdjustment, match='"c" and "b" both tried to set Mounts /m'):
        collect(CID, [("a", add), ("b", remove), ("c", reply(mounts=add.adjust.mounts))])


def test_removing_an_entry_of_the_spec_leaves_it_free_to_set() -> None:
    remove = reply(env=[api_pb2.KeyValue(key="-HOME")], annotations={"-note": ""})
    add = reply(env=[api_pb2.KeyValue(key="HOME", value="/h")], annotations={"note": "n"})
    result = collect(CID, [("a", remove), ("b", add)])
    assert [(e.key, e.value) for e in result.adjustment.env] == [("HOME", "/h")]
    assert dict(result.adjustment.annotations) == {"note": "n"}
    assert entry_owners(result.owners, api_pb2.Env) == {"HOME": "b"}


def test_a_plugin_replacing_an_entry_it_removes_sends_only_the_entry() -> None:
    both = reply(
        annotations={"-k": "", "k": "new"},
        env=[api_pb2.KeyValue(key="-K"), api_pb2.KeyValue(key="K", value="new")],
    )
    merged = collect(CID, [("a", both)]).adjustment
    assert dict(merged.annotations) == {"k": "new"}
    assert [(e.key, e.value) for e in merged.env] == [("K", "new")]


def test_removing_a_namespace_claims_it_as_upstream() -> None:
    remove = linux(namespaces=[api_pb2.LinuxNamespace(type="-network")])
    add = linux(namespaces=[api_pb2.LinuxNamespace(type="network", path="/x")])
    result = collect(CID, [("a", remove)])
    assert [n.type for n in result.adjustment.linux.namespaces] == ["-network"]
    with pytest.raises(ConflictingAdjustment, match='"b" and "a" both tried to set Namespace'):
        collect(CID, [("a", remove), ("b", add)])


def test_args_led_by_an_empty_string_override_an_earlier_plugins() -> None:
    first = reply(args=["/bin/first"])
    override = reply(args=["", "/bin/second", "-v"])
    result = collect(CID, [("a", first), ("b", override)])
    assert list(result.adjustment.args) == ["/bin/second", "-v"]
    assert simple_owner(result.owners, api_pb2.Args) == "b"


def test_rdt_removal_clears_every_rdt_field_for_its_plugin() -> None:
    set_clos = linux(rdt=api_pb2.LinuxRdt(clos_id=api_pb2.OptionalString(value="gold")))
    remove = linux(rdt=api_pb2.LinuxRdt(remove=True))
    result = collect(CID, [("a", set_clos), ("b", remove)])
    rdt = result.adjustment.linux.rdt
    assert rdt.remove
    assert not rdt.HasField("clos_id")
    assert simple_owner(result.owners, api_pb2.RdtClosID) == "-b"
    with pytest.raises(ConflictingAdjustment, match='"c" and "b" both tried to set RdtClosID'):
        collect(CID, [("a", set_clos), ("b", remove), ("c", set_clos)])


def update(
    container_id: str, ignore_failure: bool = False, **fields: object
) -> api_pb2.ContainerUpdate:
    return api_pb2.ContainerUpdate(
        container_id=container_id,
        linux=api_pb2.LinuxContainerUpdate(resources=api_pb2.LinuxResources(**fields)),  # type: ignore[arg-type]
        ignore_failure=ignore_failure,
    )


def test_updates_of_other_containers_merge_per_container() -> None:
    first = Reply(
        update=[
            update("x", memory=api_pb2.LinuxMemory(limit=api_pb2.OptionalInt64(value=100))),
            update("y", cpu=api_pb2.LinuxCPU(cpus="1")),
        ],
        evict=[api_pb2.ContainerEviction(container_id="z", reason="room")],
    )
    second = Reply(
        update=[
            update("x", cpu=api_pb2.LinuxCPU(cpus="2"), unified={"io.weight": "5"}),
            update("x", hugepage_limits=[api_pb2.HugepageLimit(page_size="2MB", limit=4)]),
        ]
    )
    result = collect(CID, [("a", first), ("b", second)])
    assert [u.container_id for u in result.updates] == ["x", "y"]
    x = result.updates[0].linux.resources
    assert (x.memory.limit.value, x.cpu.cpus, dict(x.unified)) == (100, "2", {"io.weight": "5"})
    assert [h.page_size for h in x.hugepage_limits] == ["2MB"]
    assert [e.container_id for e in result.evictions] == ["z"]
    assert result.owners.owners["x"].simple[api_pb2.MemLimit] == "a"
    assert result.owners.owners["x"].simple[api_pb2.CPUSetCPUs] == "b"


def test_conflicting_updates_fail_unless_they_may_be_ignored() -> None:
    def cpus(plugin_cpus: str, ignore: bool = False) -> list[api_pb2.ContainerUpdate]:
        return [update("x", ignore, cpu=api_pb2.LinuxCPU(cpus=plugin_cpus, mems="0"))]

    with pytest.raises(ConflictingAdjustment, match='"b" and "a" both tried to set CPUSetCPUs'):
        collect_updates([("a", cpus("1")), ("b", cpus("2"))])
    result = collect_updates([("a", cpus("1")), ("b", cpus("2", ignore=True))])
    (merged,) = result.updates
    assert merged.linux.resources.cpu.cpus == "1"
    # The ignored update is dropped whole: none of its claims stay behind.
    assert result.owners.owners["x"].simple[api_pb2.CPUSetMems] == "a"
    assert not merged.ignore_failure


def test_ignore_failure_holds_only_if_every_plugin_allows_it() -> None:
    shares = api_pb2.LinuxCPU(shares=api_pb2.OptionalUInt64(value=2))
    quota = api_pb2.LinuxCPU(quota=api_pb2.OptionalInt64(value=2000))
    both = collect_updates(
        [("a", [update("x", True, cpu=shares)]), ("b", [update("x", True, cpu=quota)])]
    )
    assert both.updates[0].ignore_failure
    one = collect_updates(
        [("a", [update("x", True, cpu=shares)]), ("b", [update("x", False, cpu=quota)])]
    )
    assert not one.updates[0].ignore_failure


def test_a_plugin_may_not_update_the_container_being_created() -> None:
    bad = Reply(update=[update(CID, cpu=api_pb2.LinuxCPU(cpus="1"))])
    with pytest.raises(AdjustmentError, match=f'plugin "a" asked to update {CID}'):
        collect(CID, [("a", bad)])


def test_plugins_adjust_the_requested_update_which_comes_last() -> None:
    requested = update("x", memory=api_pb2.LinuxMemory(limit=api_pb2.OptionalInt64(value=100)))
    result = collect_updates(
        [
            ("a", [update("x", cpu=api_pb2.LinuxCPU(cpus="3"))]),
            ("b", [update("y", cpu=api_pb2.LinuxCPU(mems="0"))]),
        ],
        requested=requested,
    )
    assert [u.container_id for u in result.updates] == ["y", "x"]
    x = result.updates[1].linux.resources
    assert (x.memory.limit.value, x.cpu.cpus) == (100, "3")
    # The request's own figures are nobody's: a plugin may change them.
    assert api_pb2.MemLimit not in result.owners.owners["x"].simple
    assert requested.linux.resources.cpu.cpus == ""
