"""What a container's securityContext asks (CRI LinuxContainerSecurityContext), checked from
inside the running container: its identity, capabilities, no_new_privs, read-only rootfs,
masked and read-only paths, seccomp and its PID and network namespaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, exec_sync, pulled, status
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry

# containerd's default capability set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
# SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
DEFAULT_CAP_MASK = 0x00000000A80425FB
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def secured(image: str, command: list[str], **security: Any) -> Any:
    """A container config whose linux.security_context has `security`."""
    return container_config(
        image,
        command,
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(**security)
        ),
    )


def run_secured(agent: Agent, image: str, **security: Any) -> str:
    """A running `sleep 60` container with `security`, in a pod of its own."""
    return Pod(agent).run(secured(image, ["sleep", "60"], **security))


def output(agent: Agent, container_id: str, cmd: list[str]) -> str:
    """stdout of a command that must succeed inside the container."""
    result = exec_sync(agent, container_id, cmd)
    assert result.exit_code == 0, (cmd, result.stdout, result.stderr)
    return str(result.stdout.decode())


def proc_status(agent: Agent, container_id: str, key: str) -> str:
    """A field of /proc/self/status as the container's processes see it."""
    text = output(agent, container_id, ["cat", "/proc/self/status"])
    return next(line.split()[1] for line in text.splitlines() if line.startswith(f"{key}:"))


def cap_eff(agent: Agent, container_id: str) -> int:
    return int(proc_status(agent, container_id, "CapEff"), 16)


def mounts_at(agent: Agent, container_id: str, target: str) -> list[list[str]]:
    """The options of each mount at `target` in the container's /proc/mounts, in order."""
    table = output(agent, container_id, ["cat", "/proc/mounts"])
    rows = [line.split() for line in table.splitlines()]
    return [fields[3].split(",") for fields in rows if fields[1] == target]


def mount_options(agent: Agent, container_id: str, target: str) -> list[str]:
    """The options of the topmost mount at `target`."""
    found = mounts_at(agent, container_id, target)
    assert found, f"nothing is mounted at {target}"
    return found[-1]


def file_type(agent: Agent, container_id: str, path: str) -> str:
    return output(agent, container_id, ["stat", "-c", "%F %t:%T", path]).strip()


def fails(agent: Agent, container_id: str, script: str) -> bool:
    return bool(exec_sync(agent, container_id, ["sh", "-c", script]).exit_code != 0)


def host_default_interface() -> str:
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return fields[0]
    pytest.skip("the host has no default route")


def agent_bounding_set(agent: Agent) -> int:
    lines = Path(f"/proc/{agent.pid}/status").read_text().splitlines()
    return int(next(ln.split()[1] for ln in lines if ln.startswith("CapBnd:")), 16)


def localhost_seccomp(path: Path) -> Any:
    return pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(path))


# -- identity ------------------------------------------------------------------------------


def test_run_as_user_sets_the_uid(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, run_as_user=pb.Int64Value(value=1234))

    assert output(agent, container_id, ["id", "-u"]).strip() == "1234"


def test_run_as_username_resolves_through_the_images_passwd(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, run_as_username="app")

    assert output(agent, container_id, ["id", "-u"]).strip() == "1000"
    assert output(agent, container_id, ["id", "-g"]).strip() == "1000"


def test_run_as_group_sets_the_gid(agent: Agent, image: str) -> None:
    container_id = run_secured(
        agent, image, run_as_user=pb.Int64Value(value=1000), run_as_group=pb.Int64Value(value=3000)
    )

    assert output(agent, container_id, ["id", "-g"]).strip() == "3000"


def test_run_as_group_without_a_user_is_invalid(agent: Agent, image: str) -> None:
    config = secured(image, ["sleep", "60"], run_as_group=pb.Int64Value(value=3000))
    pod = Pod(agent)

    assert_rpc_error(lambda: pod.create(config), grpc.StatusCode.INVALID_ARGUMENT, "run_as_group")


def test_an_unknown_run_as_username_is_invalid(agent: Agent, image: str) -> None:
    config = secured(image, ["sleep", "60"], run_as_username="no-such-user")
    pod = Pod(agent)

    assert_rpc_error(lambda: pod.create(config), grpc.StatusCode.INVALID_ARGUMENT, "no-such-user")


def test_supplemental_groups_are_held_by_the_process(agent: Agent, image: str) -> None:
    container_id = run_secured(
        agent, image, run_as_user=pb.Int64Value(value=1000), supplemental_groups=[4000, 5000]
    )

    groups = output(agent, container_id, ["id", "-G"]).split()
    assert {"4000", "5000"} <= set(groups)


def test_status_reports_the_user_the_process_runs_as(agent: Agent, image: str) -> None:
    container_id = run_secured(
        agent,
        image,
        run_as_user=pb.Int64Value(value=1000),
        run_as_group=pb.Int64Value(value=3000),
        supplemental_groups=[4000, 5000],
    )

    reported = status(agent, container_id).status.user.linux
    assert (reported.uid, reported.gid) == (1000, 3000)
    assert {4000, 5000} <= set(reported.supplemental_groups)
    inside = {int(g) for g in output(agent, container_id, ["id", "-G"]).split()}
    assert inside == {reported.gid, *reported.supplemental_groups}


def groups_of_the_process(agent: Agent, container_id: str) -> list[int]:
    """The Groups line of /proc/PID/status of the container's process, read on the host."""
    pid = json.loads(status(agent, container_id, verbose=True).info["info"])["pid"]
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return [int(g) for g in next(ln for ln in lines if ln.startswith("Groups:")).split()[1:]]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (pb.SupplementalGroupsPolicy.Merge, [1000, 1234, 50000]),
        (pb.SupplementalGroupsPolicy.Strict, [1000, 1234]),
    ],
    ids=["Merge", "Strict"],
)
def test_status_reports_every_group_the_process_holds(
    agent: Agent, registry: LocalRegistry, policy: Any, expected: list[int]
) -> None:
    """Regression: the primary gid was missing from ContainerStatus.user.linux."""
    user_image = pulled(agent, registry, "user")
    container_id = Pod(agent).run(
        secured(
            user_image,
            ["sleep", "60"],
            supplemental_groups=[1234],
            supplemental_groups_policy=policy,
        )
    )

    reported = status(agent, container_id).status.user.linux
    assert (reported.uid, reported.gid) == (1000, 1000)
    assert sorted(reported.supplemental_groups) == expected
    assert sorted(groups_of_the_process(agent, container_id)) == expected


# -- capabilities --------------------------------------------------------------------------


def test_the_default_capabilities_are_containerds(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image)

    assert cap_eff(agent, container_id) == DEFAULT_CAP_MASK


def test_drop_all_leaves_no_capability(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, capabilities=pb.Capability(drop_capabilities=["ALL"]))

    assert cap_eff(agent, container_id) == 0
    assert int(proc_status(agent, container_id, "CapBnd"), 16) == 0


def test_an_added_capability_joins_the_defaults(agent: Agent, image: str) -> None:
    container_id = run_secured(
        agent, image, capabilities=pb.Capability(add_capabilities=["NET_ADMIN"])
    )

    assert cap_eff(agent, container_id) == DEFAULT_CAP_MASK | 1 << CAP_NET_ADMIN


def test_a_dropped_capability_leaves_the_defaults(agent: Agent, image: str) -> None:
    container_id = run_secured(
        agent, image, capabilities=pb.Capability(drop_capabilities=["NET_RAW"])
    )

    assert cap_eff(agent, container_id) == DEFAULT_CAP_MASK & ~(1 << CAP_NET_RAW)


def test_privileged_holds_every_capability_the_node_can_grant(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, privileged=True)

    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    # No runtime can grant more than its own bounding set (containerd uses cap.Current()).
    expected = ((1 << (last + 1)) - 1) & agent_bounding_set(agent)
    assert cap_eff(agent, container_id) == expected


def test_privileged_mounts_sys_read_write(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, privileged=True)

    assert "rw" in mount_options(agent, container_id, "/sys")


def test_privileged_has_no_masked_or_read_only_paths(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, privileged=True)

    assert file_type(agent, container_id, "/proc/keys").startswith("regular")
    assert output(agent, container_id, ["ls", "-A", "/sys/firmware"]).strip() != ""
    assert mounts_at(agent, container_id, "/proc/sys") == []


# -- no_new_privs and the read-only rootfs ---------------------------------------------------


def test_no_new_privs_is_set_when_asked(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, no_new_privs=True)

    assert proc_status(agent, container_id, "NoNewPrivs") == "1"


def test_no_new_privs_is_unset_by_default(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image)

    assert proc_status(agent, container_id, "NoNewPrivs") == "0"


def test_a_readonly_rootfs_refuses_writes_and_the_container_runs(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, readonly_rootfs=True)

    result = exec_sync(agent, container_id, ["touch", "/written"])

    assert result.exit_code != 0
    assert b"Read-only file system" in result.stderr
    assert "ro" in mount_options(agent, container_id, "/")
    assert status(agent, container_id).status.state == pb.CONTAINER_RUNNING
    # The mounts the runtime provides stay writable.
    assert exec_sync(agent, container_id, ["touch", "/dev/shm/written"]).exit_code == 0


def test_a_writable_rootfs_by_default(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image)

    assert exec_sync(agent, container_id, ["touch", "/written"]).exit_code == 0


# -- masked and read-only paths -------------------------------------------------------------


def test_default_masked_paths_are_dev_null(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image)

    # (/proc/kcore, the usual example, is not built into every kernel: /proc/keys is.)
    assert file_type(agent, container_id, "/proc/keys") == "character special file 1:3"
    assert output(agent, container_id, ["cat", "/proc/keys"]) == ""
    # A masked directory is an empty read-only tmpfs.
    assert output(agent, container_id, ["ls", "-A", "/sys/firmware"]).strip() == ""
    assert "ro" in mount_options(agent, container_id, "/sys/firmware")


def test_default_readonly_paths_refuse_writes(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image)

    assert "ro" in mount_options(agent, container_id, "/proc/sys")
    assert fails(agent, container_id, "echo 1 > /proc/sys/kernel/domainname")
    assert "ro" in mount_options(agent, container_id, "/sys")


def test_requested_masked_paths_replace_the_defaults(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, masked_paths=["/proc/version", "/etc/group"])

    assert file_type(agent, container_id, "/proc/version") == "character special file 1:3"
    assert output(agent, container_id, ["cat", "/etc/group"]) == ""
    assert file_type(agent, container_id, "/proc/keys").startswith("regular")


def test_requested_readonly_paths_replace_the_defaults(agent: Agent, image: str) -> None:
    container_id = run_secured(agent, image, readonly_paths=["/etc"])

    assert fails(agent, container_id, "touch /etc/written")
    assert "ro" in mount_options(agent, container_id, "/etc")
    assert exec_sync(agent, container_id, ["touch", "/written"]).exit_code == 0
    assert mounts_at(agent, container_id, "/proc/sys") == []


# -- seccomp --------------------------------------------------------------------------------


def test_runtime_default_seccomp_filters(agent: Agent, image: str) -> None:
    runtime_default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    container_id = run_secured(agent, image, seccomp=runtime_default)

    assert proc_status(agent, container_id, "Seccomp") == "2"


def test_unconfined_seccomp_has_no_filter(agent: Agent, image: str) -> None:
    unconfined = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    container_id = run_secured(agent, image, seccomp=unconfined)

    assert proc_status(agent, container_id, "Seccomp") == "0"


def test_a_localhost_profile_is_enforced(agent: Agent, image: str, tmp_path: Path) -> None:
    profile = tmp_path / "deny-mkdir.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
                ],
            }
        )
    )
    container_id = run_secured(agent, image, seccomp=localhost_seccomp(profile))

    assert proc_status(agent, container_id, "Seccomp") == "2"
    result = exec_sync(agent, container_id, ["mkdir", "/tmp-made"])
    assert result.exit_code != 0
    assert b"Operation not permitted" in result.stderr
    assert exec_sync(agent, container_id, ["touch", "/made"]).exit_code == 0


def test_a_missing_localhost_profile_is_invalid(agent: Agent, image: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-profile.json"
    config = secured(image, ["sleep", "60"], seccomp=localhost_seccomp(missing))
    pod = Pod(agent)

    assert_rpc_error(
        lambda: pod.create(config), grpc.StatusCode.INVALID_ARGUMENT, "no-such-profile.json"
    )


# -- namespaces -----------------------------------------------------------------------------


def namespaced(image: str, command: list[str], **modes: Any) -> Any:
    return secured(image, command, namespace_options=pb.NamespaceOption(**modes))


def process_commands(agent: Agent, container_id: str) -> dict[int, str]:
    """pid -> command line of every process the container can see in its /proc."""
    # Host processes may carry newlines in their arguments: fold them so one line is one pid.
    script = "for d in /proc/[0-9]*; do echo \"${d#/proc/} $(tr '\\0\\n' '  ' < $d/cmdline)\"; done"
    listing = output(agent, container_id, ["sh", "-c", script])
    commands = {}
    for line in listing.splitlines():
        pid, _, command = line.partition(" ")
        commands[int(pid)] = command.strip()
    return commands


def test_a_container_pid_namespace_holds_only_its_processes(agent: Agent, image: str) -> None:
    pod = Pod(agent, pid=pb.CONTAINER)
    container_id = pod.run(namespaced(image, ["sleep", "61"], pid=pb.CONTAINER))
    other = pod.run(namespaced(image, ["sleep", "62"], pid=pb.CONTAINER))

    commands = process_commands(agent, container_id)

    assert commands[1] == "sleep 61"
    assert not any("sleep 62" in c for c in commands.values())
    assert "sleep 61" not in process_commands(agent, other).values()


def test_a_pod_pid_namespace_is_shared_by_its_containers(agent: Agent, image: str) -> None:
    pod = Pod(agent, pid=pb.POD)
    first = pod.run(namespaced(image, ["sleep", "61"], pid=pb.POD))
    second = pod.run(namespaced(image, ["sleep", "62"], pid=pb.POD))

    for container_id in (first, second):
        commands = set(process_commands(agent, container_id).values())
        assert {"sleep 61", "sleep 62"} <= commands
    same = {output(agent, c, ["readlink", "/proc/self/ns/pid"]) for c in (first, second)}
    assert len(same) == 1


def test_a_target_pid_namespace_is_the_target_containers(agent: Agent, image: str) -> None:
    pod = Pod(agent, pid=pb.CONTAINER)
    target = pod.run(namespaced(image, ["sleep", "61"], pid=pb.CONTAINER))

    debugger = pod.run(namespaced(image, ["sleep", "62"], pid=pb.TARGET, target_id=target))

    commands = process_commands(agent, debugger)
    assert commands[1] == "sleep 61"
    assert "sleep 62" in commands.values()
    same = {output(agent, c, ["readlink", "/proc/self/ns/pid"]) for c in (target, debugger)}
    assert len(same) == 1


def test_a_target_that_is_not_running_is_refused(agent: Agent, image: str) -> None:
    pod = Pod(agent, pid=pb.CONTAINER)
    stopped = pod.create(namespaced(image, ["sleep", "61"], pid=pb.CONTAINER))

    assert_rpc_error(
        lambda: pod.create(namespaced(image, ["sleep", "62"], pid=pb.TARGET, target_id=stopped)),
        grpc.StatusCode.NOT_FOUND,
        "not running",
    )


def test_a_node_pid_namespace_sees_the_hosts_processes(agent: Agent, image: str) -> None:
    pod = Pod(agent, pid=pb.NODE)
    container_id = pod.run(namespaced(image, ["sleep", "60"], pid=pb.NODE))

    commands = process_commands(agent, container_id)

    assert 1 in commands
    assert "moorage" in commands.get(agent.pid, "")
    host_ns = Path("/proc/self/ns/pid").readlink()
    assert output(agent, container_id, ["readlink", "/proc/self/ns/pid"]).strip() == str(host_ns)


def test_a_node_network_pod_sees_the_hosts_interfaces(agent: Agent, image: str) -> None:
    interface = host_default_interface()
    pod = Pod(agent, network=pb.NODE)
    container_id = pod.run(namespaced(image, ["sleep", "60"], network=pb.NODE, pid=pb.POD))

    devices = output(agent, container_id, ["cat", "/proc/net/dev"])

    assert f"{interface}:" in devices
    host_ns = Path("/proc/self/ns/net").readlink()
    assert output(agent, container_id, ["readlink", "/proc/self/ns/net"]).strip() == str(host_ns)
