"""Env values that are not UTF-8 reach the container's process as their exact bytes, through
env-exec, with both runtimes; a container whose env is all UTF-8 is started as before."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime.layout import Layout
from runtime.oci.env_exec import ENV_EXEC_IN_CONTAINER
from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.containers import (
    Pod,
    container_config,
    exec_sync,
    pulled,
    running_command,
)
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry

RAW = b"a\xff\xfeb"
ENVS = [pb.KeyValue(key="RAW", value=RAW), pb.KeyValue(key="PLAIN", value="héllo".encode())]


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def running_sleep(agent: Agent, container_id: str) -> int:
    return running_command(agent, container_id, ["sleep", "60"])


def environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def spec_of(agent: Agent, container_id: str) -> dict[str, Any]:
    config = Layout(agent.root_dir, agent.run_dir).container(container_id).config
    spec: dict[str, Any] = json.loads(config.read_text())
    return spec


@pytest.mark.parametrize("handler", ["crun", "runc"])
def test_a_non_utf8_env_value_reaches_pid_1_as_its_bytes(
    agent: Agent, image: str, handler: str
) -> None:
    pod = Pod(agent, runtime_handler=handler)
    raw_id = pod.run(container_config(image, ["sleep", "60"], envs=ENVS))
    plain_id = pod.run(container_config(image, ["sleep", "60"], envs=ENVS[1:]))
    # Waiting for the command also shows env-exec is gone: the process is `sleep` itself.
    raw_pid, plain_pid = running_sleep(agent, raw_id), running_sleep(agent, plain_id)

    # Once, exact: not also a U+FFFD-mangled copy from process.env.
    assert [entry for entry in environ(raw_pid) if entry.startswith(b"RAW=")] == [b"RAW=" + RAW]
    assert "PLAIN=héllo".encode() in environ(raw_pid)
    # With the fds of any container: env-exec left none open.
    assert sorted(os.listdir(f"/proc/{raw_pid}/fd")) == sorted(os.listdir(f"/proc/{plain_pid}/fd"))


def test_exec_sync_sees_the_same_bytes(agent: Agent, image: str) -> None:
    container_id = Pod(agent).run(container_config(image, ["sleep", "60"], envs=ENVS))

    result = exec_sync(agent, container_id, ["sh", "-c", 'printf %s "$RAW"'])

    assert (result.exit_code, result.stdout) == (0, RAW)


def test_a_utf8_only_container_has_no_env_exec(agent: Agent, image: str) -> None:
    container_id = Pod(agent).run(container_config(image, ["sleep", "60"], envs=ENVS[1:]))

    spec = spec_of(agent, container_id)

    assert spec["process"]["args"] == ["sleep", "60"]
    assert ENV_EXEC_IN_CONTAINER not in {mount["destination"] for mount in spec["mounts"]}
    assert "PLAIN=héllo".encode() in environ(running_sleep(agent, container_id))


def test_without_the_helper_a_non_utf8_env_is_a_failed_precondition(
    agent_factory: AgentFactory, registry: LocalRegistry
) -> None:
    agent = agent_factory(extra_runtime_config='env_exec_path = "/nonexistent/env-exec"\n')
    config = container_config(pulled(agent, registry), ["sleep", "60"], envs=ENVS)
    pod = Pod(agent)

    assert_rpc_error(
        lambda: pod.create(config),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not UTF-8",
        "/nonexistent/env-exec",
    )
