"""Containers through the CRI client: requests with unique names and waits on their state."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import RPC_TIMEOUT_S, Agent
from tests.e2e.pods import pod_config
from tests.registry_fixture import REPO_PREFIX, LocalRegistry
from tests.waiting import wait_until


def image_name(registry: LocalRegistry, name: str = "single") -> str:
    return f"{registry.address}/{REPO_PREFIX}/{name}:latest"


def pulled(agent: Agent, registry: LocalRegistry, name: str = "single") -> str:
    image = image_name(registry, name)
    agent.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    return image


def container_config(
    image: str,
    command: list[str],
    *,
    name: str = "",
    log_path: str = "",
    **fields: Any,
) -> Any:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name or f"c-{secrets.token_hex(3)}"),
        image=pb.ImageSpec(image=image),
        command=command,
        log_path=log_path,
        **fields,
    )


class Pod:
    """A running pod of one agent with its config, for creating containers in it."""

    def __init__(
        self,
        agent: Agent,
        log_directory: Path | None = None,
        runtime_handler: str = "",
        **pod_fields: Any,
    ):
        self.agent = agent
        self.config = pod_config(**pod_fields)
        if log_directory is not None:
            self.config.log_directory = str(log_directory)
        self.id = agent.run_pod(self.config, runtime_handler=runtime_handler)

    def create(self, config: Any) -> str:
        response = self.agent.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=self.id, config=config, sandbox_config=self.config
            ),
            timeout=RPC_TIMEOUT_S,
        )
        return str(response.container_id)

    def run(self, config: Any) -> str:
        container_id = self.create(config)
        start(self.agent, container_id)
        return container_id


def start(agent: Agent, container_id: str) -> None:
    agent.runtime.StartContainer(
        pb.StartContainerRequest(container_id=container_id), timeout=RPC_TIMEOUT_S
    )


def stop(agent: Agent, container_id: str, timeout: int = 0) -> None:
    agent.runtime.StopContainer(
        pb.StopContainerRequest(container_id=container_id, timeout=timeout),
        timeout=RPC_TIMEOUT_S + timeout,
    )


def remove(agent: Agent, container_id: str) -> None:
    agent.runtime.RemoveContainer(
        pb.RemoveContainerRequest(container_id=container_id), timeout=RPC_TIMEOUT_S
    )


def status(agent: Agent, container_id: str, verbose: bool = False) -> Any:
    return agent.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=container_id, verbose=verbose),
        timeout=RPC_TIMEOUT_S,
    )


def state(agent: Agent, container_id: str) -> Any:
    return status(agent, container_id).status.state


def wait_for_exit(agent: Agent, container_id: str, timeout_s: float = 10.0) -> Any:
    exited = wait_until(
        lambda: state(agent, container_id) == pb.CONTAINER_EXITED, timeout_s=timeout_s
    )
    current = status(agent, container_id).status
    if not exited:
        pytest.fail(f"container {container_id} did not exit: {current}")
    return current


def exec_sync(agent: Agent, container_id: str, cmd: list[str], timeout: int = 10) -> Any:
    return agent.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
        timeout=RPC_TIMEOUT_S + timeout,
    )


def list_containers(agent: Agent, flt: Any = None) -> list[Any]:
    request = pb.ListContainersRequest() if flt is None else pb.ListContainersRequest(filter=flt)
    return list(agent.runtime.ListContainers(request, timeout=RPC_TIMEOUT_S).containers)


def log_records(path: Path) -> list[tuple[str, str, str]]:
    """(stream, tag, text) of every CRI log line; the timestamp must parse as RFC 3339."""
    records = []
    for line in path.read_text().splitlines():
        timestamp, stream, tag, text = [*line.split(" ", 3), ""][:4]
        assert "T" in timestamp and timestamp[:4].isdigit(), line
        records.append((stream, tag, text))
    return records


def running_command(agent: Agent, container_id: str, argv: list[str]) -> int:
    """The pid of the container's process once it runs `argv`: StartContainer can return
    before the runtime's init has exec'd the command."""
    pid = int(json.loads(status(agent, container_id, verbose=True).info["info"])["pid"])
    cmdline = Path(f"/proc/{pid}/cmdline")
    wanted = b"".join(arg.encode() + b"\0" for arg in argv)
    assert wait_until(lambda: cmdline.read_bytes() == wanted, timeout_s=5.0), cmdline.read_bytes()
    return pid
