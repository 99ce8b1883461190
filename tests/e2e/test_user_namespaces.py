"""Pods with a user namespace of their own (userns_options mode POD): root inside is an
unprivileged host uid, the image's files appear owned by the container's ids, volumes asked to
be idmapped are, and the mappings Moorage cannot honour fail clearly."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, exec_sync, pulled, status
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry

HOST_ID = 1_000_000_000 + (os.getpid() % 1000) * 65536
LENGTH = 65536


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def mapping(host_id: int = HOST_ID, container_id: int = 0, length: int = LENGTH) -> Any:
    return pb.IDMapping(host_id=host_id, container_id=container_id, length=length)


def userns(uids: list[Any] | None = None, gids: list[Any] | None = None, mode: Any = pb.POD) -> Any:
    return pb.UserNamespace(
        mode=mode,
        uids=[mapping()] if uids is None else uids,
        gids=[mapping(HOST_ID + 7)] if gids is None else gids,
    )


def in_userns(image: str, command: list[str], **security: Any) -> Any:
    return container_config(
        image,
        command,
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.POD, userns_options=userns()),
                **security,
            )
        ),
    )


def output(agent: Agent, container_id: str, command: list[str]) -> str:
    result = exec_sync(agent, container_id, command)
    assert result.exit_code == 0, (command, result.stdout, result.stderr)
    return str(result.stdout.decode())


def host_ids(pid: int) -> tuple[int, int]:
    """(effective uid, effective gid) of a process as the host sees them."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])


def container_pid(agent: Agent, container_id: str) -> int:
    info = status(agent, container_id, verbose=True).info["info"]
    return int(json.loads(info)["pid"])


@pytest.mark.parametrize("handler", ["crun", "runc"])
def test_root_in_a_user_namespaced_pod_is_the_mapped_host_uid(
    agent: Agent, image: str, handler: str
) -> None:
    pod = Pod(agent, runtime_handler=handler, userns=userns())

    container_id = pod.run(in_userns(image, ["sleep", "60"]))

    assert output(agent, container_id, ["id", "-u"]).strip() == "0"
    assert output(agent, container_id, ["cat", "/proc/self/uid_map"]).split() == [
        "0",
        str(HOST_ID),
        str(LENGTH),
    ]
    assert output(agent, container_id, ["cat", "/proc/self/gid_map"]).split()[1] == str(HOST_ID + 7)
    assert host_ids(container_pid(agent, container_id)) == (HOST_ID, HOST_ID + 7)


def test_the_image_files_belong_to_the_container_root(agent: Agent, image: str) -> None:
    pod = Pod(agent, userns=userns())
    container_id = pod.run(in_userns(image, ["sleep", "60"]))

    listing = output(agent, container_id, ["ls", "-lnd", "/bin", "/"]).splitlines()
    owners = {tuple(line.split()[2:4]) for line in listing}
    assert owners == {("0", "0")}
    script = "echo x > /bin/new && chown 5:5 /bin/new"
    written = exec_sync(agent, container_id, ["sh", "-c", script])
    assert written.exit_code == 0, written.stderr


def test_the_containers_of_a_pod_share_its_user_namespace(agent: Agent, image: str) -> None:
    pod = Pod(agent, userns=userns())
    first = pod.run(in_userns(image, ["sleep", "61"]))
    second = pod.run(in_userns(image, ["sleep", "62"]))

    namespaces = {output(agent, c, ["readlink", "/proc/self/ns/user"]) for c in (first, second)}
    assert len(namespaces) == 1
    assert namespaces != {str(Path("/proc/self/ns/user").readlink()) + "\n"}
    both = output(agent, first, ["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"])
    assert "sleep 62" in both


def test_root_in_the_pod_has_no_power_over_the_host(agent: Agent, image: str) -> None:
    pod = Pod(agent, userns=userns())
    container_id = pod.run(in_userns(image, ["sleep", "60"], privileged=False))

    # CAP_SYS_ADMIN inside, over nothing outside: the node's hostname is not its to change.
    result = exec_sync(agent, container_id, ["sh", "-c", "echo 1 > /proc/sys/kernel/panic"])

    assert result.exit_code != 0


def test_an_idmapped_volume_shows_host_files_as_the_containers(
    agent: Agent, image: str, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "owned-by-root").write_text("host root's")
    os.chown(volume, 0, 0)
    pod = Pod(agent, userns=userns())
    config = in_userns(image, ["sleep", "60"])
    config.mounts.append(
        pb.Mount(
            container_path="/vol",
            host_path=str(volume),
            uidMappings=[mapping()],
            gidMappings=[mapping(HOST_ID + 7)],
        )
    )
    plain = tmp_path / "plain"
    plain.mkdir()
    config.mounts.append(pb.Mount(container_path="/plain", host_path=str(plain)))

    container_id = pod.run(config)

    assert output(agent, container_id, ["stat", "-c", "%u:%g", "/vol/owned-by-root"]) == "0:0\n"
    assert exec_sync(agent, container_id, ["sh", "-c", ": > /vol/new"]).exit_code == 0
    assert os.stat(volume / "new").st_uid == 0
    assert output(agent, container_id, ["stat", "-c", "%u", "/plain"]) == "65534\n"


@pytest.mark.parametrize(
    "case",
    [
        (userns(uids=[mapping(), mapping(HOST_ID + LENGTH, LENGTH)]), "exactly one mapping"),
        (userns(uids=[mapping(container_id=1)]), "container id 0"),
        (userns(gids=[]), "exactly one mapping"),
        (userns(uids=[], gids=[], mode=pb.NODE), None),
        (pb.UserNamespace(mode=pb.NODE, uids=[mapping()], gids=[mapping()]), "NODE"),
        (userns(mode=pb.TARGET), "TARGET"),
    ],
    ids=["two-uid-mappings", "root-unmapped", "no-gids", "node", "node-with-maps", "target"],
)
def test_user_namespace_requests_moorage_cannot_honour_fail(
    agent: Agent, case: tuple[Any, str | None]
) -> None:
    request, message = case
    if message is None:
        Pod(agent, userns=request)
        return
    assert_rpc_error(lambda: Pod(agent, userns=request), grpc.StatusCode.INVALID_ARGUMENT, message)


def test_a_per_container_user_namespace_is_unimplemented(agent: Agent) -> None:
    assert_rpc_error(
        lambda: Pod(agent, userns=userns(mode=pb.CONTAINER)),
        grpc.StatusCode.UNIMPLEMENTED,
        "CONTAINER",
    )


@pytest.mark.parametrize(
    ("shared", "field"), [({"ipc": pb.NODE}, "ipc"), ({"pid": pb.NODE}, "pid")]
)
def test_a_user_namespaced_pod_cannot_share_the_nodes_ipc_or_pid(
    agent: Agent, shared: dict[str, Any], field: str
) -> None:
    assert_rpc_error(
        lambda: Pod(agent, userns=userns(), **shared),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"cannot share the node's {field} namespace",
    )


@pytest.mark.parametrize("handler", ["crun", "runc"])
def test_a_user_namespaced_pod_can_use_the_host_network(
    agent: Agent, image: str, handler: str
) -> None:
    pod = Pod(agent, runtime_handler=handler, userns=userns(), network=pb.NODE)

    container_id = pod.run(in_userns(image, ["sleep", "60"]))

    assert output(agent, container_id, ["cat", "/proc/self/uid_map"]).split() == [
        "0",
        str(HOST_ID),
        str(LENGTH),
    ]
    # /proc/net shows the interfaces of the reader's network namespace.
    # A host interface made now (this kernel has veth, not dummy): no other test has it.
    host_link = f"mo{secrets.token_hex(4)}"
    subprocess.run(
        ["ip", "link", "add", host_link, "type", "veth", "peer", "name", f"{host_link}p"],
        check=True,
    )
    try:
        devices = output(agent, container_id, ["cat", "/proc/net/dev"]).splitlines()[2:]
    finally:
        subprocess.run(["ip", "link", "del", host_link], check=False)
    assert host_link in {line.split(":")[0].strip() for line in devices}
    assert os.readlink(f"/proc/{container_pid(agent, container_id)}/ns/net") == os.readlink(
        "/proc/self/ns/net"
    )
    agent.stop_pod(pod.id)
    agent.remove_pod(pod.id)
    assert agent.leftovers() == []


def test_a_container_cannot_ask_for_another_mapping_than_its_pods(agent: Agent, image: str) -> None:
    pod = Pod(agent, userns=userns())
    config = in_userns(image, ["sleep", "60"])
    config.linux.security_context.namespace_options.userns_options.uids[0].host_id += LENGTH

    assert_rpc_error(
        lambda: pod.create(config), grpc.StatusCode.INVALID_ARGUMENT, "differs from the pod's"
    )


def test_status_advertises_user_namespaces_for_every_handler(agent: Agent) -> None:
    handlers = agent.runtime.Status(pb.StatusRequest()).runtime_handlers

    assert all(handler.features.user_namespaces for handler in handlers)


def pod_mounts(sandbox_id: str) -> list[str]:
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if sandbox_id in line
    ]


def test_removing_the_pod_releases_its_user_namespace(agent: Agent, image: str) -> None:
    pod = Pod(agent, userns=userns())
    pod.run(in_userns(image, ["sleep", "60"]))
    assert any("userns" in line for line in pod_mounts(pod.id))

    agent.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    agent.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))

    assert pod_mounts(pod.id) == []


def test_a_user_namespaced_pod_survives_an_agent_restart(agent: Agent, image: str) -> None:
    pod = Pod(agent, userns=userns())
    before = pod.run(in_userns(image, ["sleep", "61"]))
    namespace = output(agent, before, ["readlink", "/proc/self/ns/user"])

    agent.restart()

    assert agent.pod_status(pod.id).state == pb.SANDBOX_READY
    after = pod.run(in_userns(image, ["sleep", "62"]))
    assert output(agent, after, ["readlink", "/proc/self/ns/user"]) == namespace


def test_an_image_volume_in_a_user_namespaced_pod_is_the_containers(
    agent: Agent, image: str
) -> None:
    pod = Pod(agent, userns=userns())
    config = in_userns(image, ["sleep", "60"])
    config.mounts.append(
        pb.Mount(container_path="/image", image=pb.ImageSpec(image=image), readonly=True)
    )

    container_id = pod.run(config)

    assert output(agent, container_id, ["stat", "-c", "%u:%g", "/image/bin"]) == "0:0\n"
