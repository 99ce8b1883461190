"""Bad CreateContainer requests: a clear error with the right code, and nothing left behind
(no rootfs mount, bundle, conmon, cgroup or row)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import (
    Pod,
    container_config,
    list_containers,
    pulled,
    status,
    wait_for_exit,
)
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.registry_push import add_file, push_image, tar_of


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def assert_nothing_left(agent: Agent, pod: Pod) -> None:
    assert list_containers(agent) == []
    assert agent.db_container_ids() == []
    assert agent.conmons() == []
    for directory in (agent.root_dir / "containers", agent.run_dir / "containers"):
        assert not directory.exists() or list(directory.iterdir()) == []
    cgroup = agent.pod_info(pod.id)["cgroup"].strip("/")
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        pod_dir = hierarchy / cgroup
        if pod_dir.is_dir():
            assert [p.name for p in pod_dir.iterdir() if p.is_dir()] == []


def bad_requests(image: str, tmp: Path) -> dict[str, tuple[Callable[[Any], None], Any, str]]:
    """name -> (change to a valid config, expected code, text in the message)."""

    def set_user(config: Any) -> None:
        config.linux.security_context.run_as_username = "nobody-here"

    def escape_log(config: Any) -> None:
        config.log_path = "../../escape.log"

    def absolute_log(config: Any) -> None:
        config.log_path = "/etc/evil.log"

    def bad_device(config: Any) -> None:
        config.devices.append(pb.Device(container_path="/dev/x", host_path=str(tmp / "plain")))

    def no_name(config: Any) -> None:
        config.metadata.name = ""

    def unknown_image(config: Any) -> None:
        config.image.image = "moorage-test/never-pulled:latest"

    def group_without_user(config: Any) -> None:
        config.linux.security_context.run_as_group.value = 5

    def resources(**fields: Any) -> Callable[[Any], None]:
        def change(config: Any) -> None:
            config.linux.resources.CopyFrom(pb.LinuxContainerResources(**fields))

        return change

    def negative_user(config: Any) -> None:
        config.linux.security_context.run_as_user.value = -1

    def negative_group(config: Any) -> None:
        config.linux.security_context.supplemental_groups.append(-7)

    def missing_binary(config: Any) -> None:
        config.command[:] = ["/no/such/binary"]

    def missing_name(config: Any) -> None:
        config.command[:] = ["no-such-command", "arg"]

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return {
        "negative memory": (resources(memory_limit_in_bytes=-1), invalid, "memory_limit"),
        "tiny cpu quota": (resources(cpu_quota=5), invalid, "cpu_quota"),
        "negative cpu quota": (resources(cpu_quota=-5), invalid, "cpu_quota"),
        "cpu period": (resources(cpu_period=5_000_000), invalid, "cpu_period"),
        "cpu shares": (resources(cpu_shares=-3), invalid, "cpu_shares"),
        "oom score": (resources(oom_score_adj=1001), invalid, "oom_score_adj"),
        "cpuset garbage": (resources(cpuset_cpus="0-x"), invalid, "cpuset_cpus"),
        "cpuset backwards": (resources(cpuset_cpus="3-1"), invalid, "cpuset_cpus"),
        "cpuset absent cpu": (resources(cpuset_cpus="4095"), invalid, "cpuset_cpus"),
        "cpuset mems": (resources(cpuset_mems="zero"), invalid, "cpuset_mems"),
        "swap below memory": (
            resources(memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=32 << 20),
            invalid,
            "memory_swap_limit",
        ),
        "negative run_as_user": (negative_user, invalid, "run_as_user"),
        "negative group": (negative_group, invalid, "supplemental_groups"),
        "missing binary": (missing_binary, invalid, "/no/such/binary"),
        "missing command": (missing_name, invalid, "no-such-command"),
        "unknown user": (set_user, invalid, "nobody-here"),
        "log path escapes": (escape_log, invalid, "log_path"),
        "absolute log path": (absolute_log, invalid, "log_path"),
        "not a device": (bad_device, invalid, "plain"),
        "empty name": (no_name, invalid, "name"),
        "unknown image": (unknown_image, grpc.StatusCode.NOT_FOUND, "never-pulled"),
        "group without user": (group_without_user, invalid, "run_as_group"),
    }


BAD_REQUESTS = list(bad_requests("", Path()))


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_container_config_fails_cleanly(
    agent: Agent, image: str, tmp_path: Path, case: str
) -> None:
    (tmp_path / "plain").write_text("not a device")
    pod = Pod(agent, log_directory=tmp_path / "logs")
    change, code, text = bad_requests(image, tmp_path)[case]
    config = container_config(image, ["true"], log_path="ok.log")
    change(config)

    assert_rpc_error(lambda: pod.create(config), code, text)

    assert_nothing_left(agent, pod)
    assert not (tmp_path / "escape.log").exists()


def test_an_image_without_a_command_needs_one_from_the_request(
    agent: Agent, registry: LocalRegistry
) -> None:
    repository = f"moorage-test/no-cmd-{secrets.token_hex(3)}"
    layer = tar_of(lambda archive: add_file(archive, "f"))
    push_image(registry.address, repository, "latest", [layer], run_config={})
    image = f"{registry.address}/{repository}:latest"
    agent.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))
    pod = Pod(agent)

    assert_rpc_error(
        lambda: pod.create(container_config(image, [])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "command",
    )

    assert_nothing_left(agent, pod)


def test_a_command_a_volume_provides_is_not_looked_up_in_the_image(
    agent: Agent, image: str, tmp_path: Path
) -> None:
    tool = tmp_path / "tools" / "hello"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho from the volume\n")
    tool.chmod(0o755)
    pod = Pod(agent)
    config = container_config(image, ["/opt/tools/hello"])
    config.mounts.append(pb.Mount(container_path="/opt/tools", host_path=str(tool.parent)))

    container_id = pod.run(config)

    assert wait_for_exit(agent, container_id).exit_code == 0


def test_a_bad_resource_update_is_invalid_and_keeps_the_limits(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    limits = pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20)
    config = container_config(
        image, ["sleep", "60"], linux=pb.LinuxContainerConfig(resources=limits)
    )
    container_id = pod.run(config)

    assert_rpc_error(
        lambda: agent.runtime.UpdateContainerResources(
            pb.UpdateContainerResourcesRequest(
                container_id=container_id,
                linux=pb.LinuxContainerResources(cpu_quota=10, memory_limit_in_bytes=32 << 20),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "linux.cpu_quota",
    )

    kept = status(agent, container_id).status.resources.linux
    assert kept.memory_limit_in_bytes == 64 << 20


def test_containers_need_a_ready_pod(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    agent.stop_pod(pod.id)

    assert_rpc_error(
        lambda: pod.create(container_config(image, ["true"])),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not ready",
    )
    missing = Pod.__new__(Pod)
    missing.agent, missing.config, missing.id = agent, pod.config, "0" * 64
    assert_rpc_error(
        lambda: missing.create(container_config(image, ["true"])),
        grpc.StatusCode.NOT_FOUND,
        "0" * 64,
    )


def test_a_name_that_is_not_utf8_is_invalid_argument(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    marker = "NAME-PLACEHOLDER"
    request = pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=container_config(image, ["true"], name=marker)
    )
    raw = request.SerializeToString().replace(marker.encode(), b"\xff" * len(marker))
    call = agent.runtime_channel().unary_unary(
        "/runtime.v1.RuntimeService/CreateContainer",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )

    assert_rpc_error(lambda: call(raw, timeout=10), grpc.StatusCode.INVALID_ARGUMENT, "UTF-8")

    assert_nothing_left(agent, pod)
