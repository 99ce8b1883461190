from __future__ import annotations

import os
import resource
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runtime.containers.model import (
    ContainerConfig,
    ContainerSecurity,
    Device,
    ImageRuntimeConfig,
    Mount,
    ProcessUser,
    Propagation,
)
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.oci.capabilities import (
    DEFAULT_CAPABILITIES,
    agent_has,
    container_capabilities,
    grantable_capabilities,
)
from runtime.oci.spec import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH,
    DEFAULT_READONLY_PATHS,
    SpecInputs,
    build_spec,
    prepare_mount_sources,
    resources_to_oci,
)
from runtime.pods.model import (
    IdMapping,
    InfraProcess,
    NamespaceMode,
    NamespaceOptions,
    PodMetadata,
    Sandbox,
    SandboxConfig,
    SandboxState,
    UserNamespace,
)
from runtime.resources import Resources

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
    "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    ],
}


def pod(
    *,
    network: NamespaceMode = NamespaceMode.POD,
    ipc: NamespaceMode = NamespaceMode.POD,
    pid: NamespaceMode = NamespaceMode.CONTAINER,
    pins: dict[str, str] | None = None,
    infra: InfraProcess | None = None,
    shm_path: str = "/run/moorage/sb1/shm",
    hostname: str = "web-0",
) -> Sandbox:
    if pins is None:
        pins = {"net": "/run/moorage/pins/net-sb1", "uts": "/run/moorage/pins/uts-sb1"}
        pins["ipc"] = "/run/moorage/pins/ipc-sb1"
    return Sandbox(
        id="sb1",
        config=SandboxConfig(
            metadata=PodMetadata(name="web-0", uid="u1", namespace="default"),
            hostname=hostname,
            namespaces=NamespaceOptions(network=network, ipc=ipc, pid=pid),
        ),
        state=SandboxState.READY,
        created_at_ns=1,
        runtime_handler="runc",
        cgroup_path="/kubepods/sb1",
        pins=pins,
        shm_path=shm_path,
        resolv_conf_path="/var/lib/moorage/sb1/resolv.conf",
        infra=infra,
    )


def spec(
    config: ContainerConfig | None = None,
    *,
    image: ImageRuntimeConfig | None = None,
    sandbox: Sandbox | None = None,
    user: ProcessUser | None = None,
    **extra: Any,
) -> dict[str, Any]:
    inputs = SpecInputs(
        container_id="c1",
        config=config or ContainerConfig(name="app", image="img"),
        image=image or ImageRuntimeConfig(cmd=["/bin/app"]),
        user=user or ProcessUser(uid=0, gid=0, home="/root"),
        rootfs="/var/lib/moorage/c1/rootfs",
        sandbox=sandbox or pod(),
        cgroups_path="/kubepods/sb1/c1",
        **extra,
    )
    return build_spec(inputs)


def with_security(**fields: Any) -> ContainerConfig:
    return ContainerConfig(name="app", image="img", security=ContainerSecurity(**fields))


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        ([], [], ["/ep"], ["c1", "c2"], ["/ep", "c1", "c2"]),
        ([], ["a1"], ["/ep"], ["c1"], ["/ep", "a1"]),
        (["/cmd"], [], ["/ep"], ["c1"], ["/cmd"]),
        (["/cmd"], ["a1"], ["/ep"], ["c1"], ["/cmd", "a1"]),
        ([], [], [], ["/bin/sh", "-c", "x"], ["/bin/sh", "-c", "x"]),
        ([], ["/bin/true"], [], ["c1"], ["/bin/true"]),
        ([], [], [""], ["/c"], ["/c"]),
    ],
)
def test_process_args_follow_the_cri_rules(
    command: list[str], args: list[str], entrypoint: list[str], cmd: list[str], expected: list[str]
) -> None:
    config = ContainerConfig(name="app", image="img", command=command, args=args)
    image = ImageRuntimeConfig(entrypoint=entrypoint, cmd=cmd)

    assert spec(config, image=image)["process"]["args"] == expected


def test_no_command_anywhere_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="no command specified"):
        spec(image=ImageRuntimeConfig())


def test_env_is_image_then_request_with_defaults_added() -> None:
    config = ContainerConfig(name="app", image="img", envs={"B": "request", "C": "3"})
    image = ImageRuntimeConfig(cmd=["x"], env=["A=1", "B=image", "EQ=a=b"])

    assert spec(config, image=image)["process"]["env"] == [
        "HOSTNAME=web-0",
        "A=1",
        "B=request",
        "EQ=a=b",
        "C=3",
        f"PATH={DEFAULT_PATH}",
        "HOME=/root",
    ]


def test_image_path_and_home_are_kept() -> None:
    image = ImageRuntimeConfig(cmd=["x"], env=["PATH=/opt/bin", "HOME=/data"])

    env = spec(image=image)["process"]["env"]

    assert "PATH=/opt/bin" in env
    assert "HOME=/data" in env
    assert f"PATH={DEFAULT_PATH}" not in env


@pytest.mark.parametrize(
    ("requested", "image_dir", "expected"),
    [("/req", "/img", "/req"), ("", "/img", "/img"), ("", "", "/")],
)
def test_working_dir_falls_back_to_the_image_then_root(
    requested: str, image_dir: str, expected: str
) -> None:
    config = ContainerConfig(name="app", image="img", working_dir=requested)
    image = ImageRuntimeConfig(cmd=["x"], working_dir=image_dir)

    assert spec(config, image=image)["process"]["cwd"] == expected


def test_user_terminal_rlimits_and_no_new_privs() -> None:
    config = replace(with_security(no_new_privs=True), tty=True)
    user = ProcessUser(uid=1000, gid=1000, additional_gids=[10, 29], username="app")

    process = spec(config, user=user, nofile_limit=1048576)["process"]

    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 29]}
    assert process["terminal"] is True
    assert process["noNewPrivileges"] is True
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]


def test_nofile_limit_never_exceeds_what_the_agent_may_grant() -> None:
    """Regression: without CAP_SYS_RESOURCE runc failed "error setting rlimit type 7"."""
    limit = spec()["process"]["rlimits"][0]["hard"]

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert limit == 1048576 or limit <= hard


def test_capability_of_the_agent_is_read_from_its_effective_set(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000001000000\n")

    assert agent_has("CAP_SYS_RESOURCE", status)
    assert not agent_has("CAP_SYS_ADMIN", status)
    assert not agent_has("CAP_SYS_ADMIN", tmp_path / "absent")


def test_default_capabilities_are_bounding_effective_and_permitted_only() -> None:
    caps = spec()["process"]["capabilities"]

    assert set(caps) == {"bounding", "effective", "permitted"}
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(DEFAULT_CAPABILITIES)


def test_capabilities_are_added_and_dropped_with_or_without_prefix() -> None:
    config = with_security(
        capabilities_add=["net_admin", "CAP_SYS_TIME"], capabilities_drop=["CHOWN", "cap_kill"]
    )

    effective = spec(config)["process"]["capabilities"]["effective"]

    assert "CAP_NET_ADMIN" in effective
    assert "CAP_SYS_TIME" in effective
    assert "CAP_CHOWN" not in effective
    assert "CAP_KILL" not in effective
    assert len(effective) == len(DEFAULT_CAPABILITIES)


def test_drop_all_then_add_one_leaves_only_that_one() -> None:
    config = with_security(capabilities_add=["NET_BIND_SERVICE"], capabilities_drop=["ALL"])

    assert spec(config)["process"]["capabilities"]["effective"] == ["CAP_NET_BIND_SERVICE"]


def test_add_all_then_drop_one_leaves_every_other_capability() -> None:
    config = with_security(capabilities_add=["ALL"], capabilities_drop=["SYS_ADMIN"])

    effective = spec(config)["process"]["capabilities"]["effective"]

    assert set(effective) == set(grantable_capabilities()) - {"CAP_SYS_ADMIN"}


def test_unknown_capability_is_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"add_capabilities: unknown capability 'FLY'"):
        spec(with_security(capabilities_add=["FLY"]))


def test_privileged_gets_every_grantable_capability_and_no_confinement() -> None:
    result = spec(with_security(privileged=True), seccomp_profile=PROFILE)

    assert result["process"]["capabilities"]["bounding"] == grantable_capabilities()
    linux = result["linux"]
    assert "maskedPaths" not in linux
    assert "readonlyPaths" not in linux
    assert "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sysfs = next(m for m in result["mounts"] if m["destination"] == "/sys")
    assert "rw" in sysfs["options"]


def test_masked_and_readonly_paths_default_to_containerds() -> None:
    linux = spec()["linux"]

    assert linux["maskedPaths"] == DEFAULT_MASKED_PATHS
    assert linux["readonlyPaths"] == DEFAULT_READONLY_PATHS
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sysrq-trigger" in linux["readonlyPaths"]


def test_requested_masked_and_readonly_paths_replace_the_defaults() -> None:
    config = with_security(masked_paths=["/proc/x"], readonly_paths=["/proc/y"])

    linux = spec(config)["linux"]

    assert (linux["maskedPaths"], linux["readonlyPaths"]) == (["/proc/x"], ["/proc/y"])


def test_seccomp_rules_follow_the_containers_capabilities() -> None:
    plain = spec(seccomp_profile=PROFILE)["linux"]["seccomp"]
    admin = spec(with_security(capabilities_add=["SYS_ADMIN"]), seccomp_profile=PROFILE)

    assert [r["names"] for r in plain["syscalls"]] == [["read"]]
    assert [r["names"] for r in admin["linux"]["seccomp"]["syscalls"]] == [["read"], ["bpf"]]
    assert "seccomp" not in spec()["linux"]


def test_oom_score_adj_is_clamped_to_what_the_agent_may_set() -> None:
    """Regression: runc failed with "can't get final child's PID from pipe" for -998."""
    config = replace(with_security(), resources=Resources(oom_score_adj=-998))

    assert spec(config, oom_score_adj_min=0)["process"]["oomScoreAdj"] == 0
    assert spec(config, oom_score_adj_min=-1000)["process"]["oomScoreAdj"] == -998


def test_resources_are_set_only_when_given() -> None:
    resources = Resources(
        cpu_period=100000,
        cpu_quota=50000,
        cpu_shares=512,
        memory_limit_bytes=64 << 20,
        cpuset_cpus="0-1",
        cpuset_mems="0",
        hugepage_limits={"2MB": 4 << 20},
        unified={"memory.high": "1000000"},
    )

    assert resources_to_oci(resources) == {
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 64 << 20},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
        "unified": {"memory.high": "1000000"},
    }
    assert resources_to_oci(Resources(memory_swap_limit_bytes=1 << 30)) == {
        "memory": {"swap": 1 << 30}
    }
    assert resources_to_oci(Resources()) == {}


def test_default_device_rules_deny_all_then_allow_the_standard_nodes() -> None:
    rules = spec()["linux"]["resources"]["devices"]

    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["type"], r["major"], r.get("minor")) for r in rules[1:]}
    assert allowed == {
        ("c", 1, 3),
        ("c", 1, 5),
        ("c", 1, 7),
        ("c", 1, 8),
        ("c", 1, 9),
        ("c", 5, 0),
        ("c", 5, 2),
        ("c", 136, None),
    }


def test_a_requested_device_is_created_and_allowed() -> None:
    config = ContainerConfig(
        name="app", image="img", devices=[Device("/dev/mynull", "/dev/null", "rw")]
    )

    linux = spec(config)["linux"]

    st = os.stat("/dev/null")
    assert linux["devices"] == [
        {
            "path": "/dev/mynull",
            "type": "c",
            "major": 1,
            "minor": 3,
            "fileMode": st.st_mode & 0o777,
            "uid": st.st_uid,
            "gid": st.st_gid,
        }
    ]
    assert linux["resources"]["devices"][-1] == {
        "allow": True,
        "type": "c",
        "major": 1,
        "minor": 3,
        "access": "rw",
    }


@pytest.mark.parametrize(
    ("host_path", "permissions", "message"),
    [
        ("/etc/hostname", "rwm", r"config.devices\[0\].host_path '/etc/hostname' is not a"),
        ("/dev/absent-xyz", "rwm", r"config.devices\[0\].host_path '/dev/absent-xyz'"),
        ("/dev/null", "rwx", r"config.devices\[0\].permissions 'rwx'"),
    ],
)
def test_bad_devices_are_rejected_naming_them(
    host_path: str, permissions: str, message: str
) -> None:
    config = ContainerConfig(
        name="app", image="img", devices=[Device("/dev/x", host_path, permissions)]
    )

    with pytest.raises(InvalidArgument, match=message):
        spec(config)


def _namespaces(result: dict[str, Any]) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in result["linux"]["namespaces"]}


def test_pod_namespaces_are_joined_by_their_pins() -> None:
    assert _namespaces(spec()) == {
        "mount": None,
        "pid": None,
        "network": "/run/moorage/pins/net-sb1",
        "ipc": "/run/moorage/pins/ipc-sb1",
        "uts": "/run/moorage/pins/uts-sb1",
    }


def test_a_user_namespaced_pod_on_the_host_network_binds_the_nodes_sys() -> None:
    """runc cannot mount sysfs from a user namespace that owns no network namespace."""
    userns = UserNamespace(IdMapping(100_000, 0, 65536), IdMapping(200_000, 0, 65536))
    sandbox = pod(
        network=NamespaceMode.NODE,
        pins={"ipc": "/run/moorage/pins/ipc-sb1", "user": "/run/moorage/pins/user-sb1"},
    )
    sandbox = replace(
        sandbox,
        config=replace(sandbox.config, namespaces=replace(sandbox.config.namespaces, user=userns)),
    )

    result = spec(sandbox=sandbox)

    assert "network" not in _namespaces(result)
    assert _by_destination(result)["/sys"] == {
        "destination": "/sys",
        "type": "bind",
        "source": "/sys",
        "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", "ro"],
    }
    assert _by_destination(spec())["/sys"]["type"] == "sysfs"


def test_pod_shared_pid_namespace_is_the_infras() -> None:
    sandbox = pod(pid=NamespaceMode.POD, infra=InfraProcess(pid=4321, start_ticks=1))
    config = with_security(namespaces=NamespaceOptions(pid=NamespaceMode.POD))

    assert _namespaces(spec(config, sandbox=sandbox))["pid"] == "/proc/4321/ns/pid"


def test_host_pid_namespace_is_left_out() -> None:
    config = with_security(namespaces=NamespaceOptions(pid=NamespaceMode.NODE))

    assert "pid" not in _namespaces(spec(config))


def test_target_pid_namespace_is_the_target_containers() -> None:
    config = with_security(namespaces=NamespaceOptions(pid=NamespaceMode.TARGET, target_id="other"))

    assert _namespaces(spec(config, target_pid=77))["pid"] == "/proc/77/ns/pid"
    with pytest.raises(InvalidArgument, match="target_id"):
        spec(config)


def test_a_user_namespaced_pod_is_joined_with_its_maps() -> None:
    userns = UserNamespace(IdMapping(100_000, 0, 65536), IdMapping(200_000, 0, 65536))
    sandbox = pod()
    sandbox = replace(
        sandbox,
        config=replace(sandbox.config, namespaces=replace(sandbox.config.namespaces, user=userns)),
        pins={**sandbox.pins, "user": "/run/moorage/pins/user-sb1"},
    )

    result = spec(sandbox=sandbox)

    assert _namespaces(result)["user"] == "/run/moorage/pins/user-sb1"
    assert result["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100_000, "size": 65536}]
    assert result["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 200_000, "size": 65536}]


def test_a_pod_in_the_nodes_user_namespace_has_no_maps() -> None:
    result = spec()

    assert "user" not in _namespaces(result)
    assert "uidMappings" not in result["linux"]


def test_host_network_and_ipc_pods_share_the_nodes_namespaces() -> None:
    sandbox = pod(network=NamespaceMode.NODE, ipc=NamespaceMode.NODE, pins={}, hostname="")

    result = spec(sandbox=sandbox, cgroup_v2=True)

    assert _namespaces(result) == {"mount": None, "pid": None, "cgroup": None}
    assert "hostname" not in result


def test_a_pod_without_the_pin_its_mode_needs_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition, match="no ipc namespace"):
        spec(sandbox=pod(pins={"net": "/n", "uts": "/u"}))


def test_own_uts_namespace_gets_the_pod_hostname_and_env() -> None:
    result = spec()

    assert result["hostname"] == "web-0"
    assert "HOSTNAME=web-0" in result["process"]["env"]


def test_root_cgroups_path_and_annotations() -> None:
    config = replace(with_security(readonly_rootfs=True), annotations={"a": "b"}, name="app")

    result = spec(config)

    assert result["ociVersion"] == "1.0.2"
    assert result["root"] == {"path": "/var/lib/moorage/c1/rootfs", "readonly": True}
    assert result["linux"]["cgroupsPath"] == "/kubepods/sb1/c1"
    assert result["annotations"] == {
        "a": "b",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "sb1",
        "io.kubernetes.cri.container-name": "app",
    }


def _by_destination(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in result["mounts"]}


def test_default_and_pod_mounts() -> None:
    mounts = _by_destination(spec())

    assert [m["destination"] for m in spec()["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/resolv.conf",
        "/dev/shm",
    ]
    assert "ro" in mounts["/sys"]["options"]
    assert "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert mounts["/etc/resolv.conf"] == {
        "destination": "/etc/resolv.conf",
        "type": "bind",
        "source": "/var/lib/moorage/sb1/resolv.conf",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert mounts["/dev/shm"]["source"] == "/run/moorage/sb1/shm"


def test_without_a_pod_shm_the_container_gets_a_private_tmpfs() -> None:
    shm = _by_destination(spec(sandbox=pod(shm_path="")))["/dev/shm"]

    assert (shm["type"], shm["source"]) == ("tmpfs", "shm")


def test_user_mounts_are_binds_with_mode_and_propagation_parents_first() -> None:
    config = ContainerConfig(
        name="app",
        image="img",
        mounts=[
            Mount("/data/cache", "/host/cache", readonly=True),
            Mount("/data", "/host/data", propagation=Propagation.HOST_TO_CONTAINER),
            Mount("/shared", "/host/shared", propagation=Propagation.BIDIRECTIONAL),
        ],
    )

    result = spec(config)

    user = result["mounts"][-3:]
    assert user == [
        {
            "destination": "/data",
            "type": "bind",
            "source": "/host/data",
            "options": ["rbind", "rslave", "rw"],
        },
        {
            "destination": "/shared",
            "type": "bind",
            "source": "/host/shared",
            "options": ["rbind", "rshared", "rw"],
        },
        {
            "destination": "/data/cache",
            "type": "bind",
            "source": "/host/cache",
            "options": ["rbind", "rprivate", "ro"],
        },
    ]
    assert result["linux"]["rootfsPropagation"] == "rshared"


def test_mount_options_follow_the_binds_own_options() -> None:
    config = ContainerConfig(
        name="app",
        image="img",
        mounts=[Mount("/data", "/host/data", mount_options=["noexec", "nosuid", "nodev"])],
    )

    (data,) = spec(config)["mounts"][-1:]

    assert data["options"] == ["rbind", "rprivate", "rw", "noexec", "nosuid", "nodev"]


def test_a_user_mount_replaces_the_default_at_the_same_place() -> None:
    config = ContainerConfig(
        name="app", image="img", mounts=[Mount("/etc/resolv.conf/", "/host/resolv")]
    )

    mounts = [m for m in spec(config)["mounts"] if m["destination"].startswith("/etc/resolv")]

    assert [m["source"] for m in mounts] == ["/host/resolv"]


def test_relative_mount_paths_are_rejected() -> None:
    config = ContainerConfig(name="app", image="img", mounts=[Mount("data", "/host")])

    with pytest.raises(InvalidArgument, match=r"config.mounts\[0\].container_path 'data'"):
        spec(config)


def test_missing_mount_sources_are_created_as_directories(tmp_path: Path) -> None:
    existing = tmp_path / "file"
    existing.write_text("x")
    config = ContainerConfig(
        name="app",
        image="img",
        mounts=[Mount("/a", str(tmp_path / "new" / "deep")), Mount("/b", str(existing))],
    )

    prepare_mount_sources(config)

    assert (tmp_path / "new" / "deep").is_dir()
    assert existing.read_text() == "x"


def test_grantable_capabilities_stay_within_the_agents_bounding_set(tmp_path: Path) -> None:
    status = tmp_path / "status"
    # Bits 0-40 except 24 (CAP_SYS_RESOURCE), as on the development VM.
    status.write_text("Name:\tx\nCapBnd:\t000001fffeffffff\n")
    last = tmp_path / "cap_last_cap"
    last.write_text("40\n")

    granted = grantable_capabilities(last, status)

    assert "CAP_SYS_RESOURCE" not in granted
    assert len(granted) == 40


def test_adding_a_capability_the_agent_lacks_is_a_clear_error(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("CapBnd:\t000001fffeffffff\n")
    security = ContainerSecurity(capabilities_add=["SYS_RESOURCE"])

    with pytest.raises(FailedPrecondition, match="CAP_SYS_RESOURCE cannot be granted"):
        container_capabilities(security, status=status)
