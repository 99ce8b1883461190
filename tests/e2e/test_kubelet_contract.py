"""What the kubelet relies on, call by call, as the CRI comments state it: retried stops and
removes, probes with a timeout, log rotation, and stopped pods.

Each test pins a place where the first wave broke the contract (issue 14)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import RPC_TIMEOUT_S, Agent
from tests.e2e.containers import (
    Pod,
    container_config,
    exec_sync,
    pulled,
    remove,
    start,
    state,
    status,
    stop,
)
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

UNKNOWN_ID = "e" * 64


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


# -- 1. stop and remove are idempotent ------------------------------------------------------


def test_stopping_an_unknown_container_succeeds(agent: Agent) -> None:
    """Regression: StopContainer of an unknown id answered NOT_FOUND; the kubelet retries
    stops after a restart and must get OK."""
    stop(agent, UNKNOWN_ID)


def test_stopping_and_removing_a_removed_container_succeed(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))
    remove(agent, container_id)

    stop(agent, container_id)
    remove(agent, container_id)

    assert_rpc_error(lambda: status(agent, container_id), grpc.StatusCode.NOT_FOUND)


def test_stopping_and_removing_an_unknown_sandbox_succeed(agent: Agent) -> None:
    agent.runtime.StopPodSandbox(
        pb.StopPodSandboxRequest(pod_sandbox_id=UNKNOWN_ID), timeout=RPC_TIMEOUT_S
    )
    agent.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=UNKNOWN_ID), timeout=RPC_TIMEOUT_S
    )

    assert_rpc_error(lambda: agent.pod_status(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND)


def test_stopping_and_removing_a_removed_sandbox_succeed(agent: Agent) -> None:
    pod = Pod(agent)
    agent.stop_pod(pod.id)
    agent.remove_pod(pod.id)

    agent.stop_pod(pod.id)
    agent.remove_pod(pod.id)

    assert_rpc_error(lambda: agent.pod_status(pod.id), grpc.StatusCode.NOT_FOUND)


def test_a_stop_with_a_negative_timeout_kills_at_once(agent: Agent, image: str) -> None:
    """Regression: a negative timeout was INVALID_ARGUMENT; the kubelet may send one."""
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sh", "-c", "trap '' TERM; sleep 60"]))

    agent.runtime.StopContainer(
        pb.StopContainerRequest(container_id=container_id, timeout=-5), timeout=RPC_TIMEOUT_S
    )

    assert state(agent, container_id) == pb.CONTAINER_EXITED
    assert status(agent, container_id).status.exit_code == 137


# -- 2. an ExecSync past its timeout kills what it started ----------------------------------


def sleeps_in(agent: Agent, container_id: str) -> list[str]:
    """The exec'd sleeps (61 to 64 s) still in the container; its own is `sleep 60`."""
    listing = exec_sync(agent, container_id, ["ps", "-o", "pid,args"]).stdout.decode()
    return [line for line in listing.splitlines() if re.search(r"sleep 6[1-4]", line)]


@pytest.mark.parametrize(
    "command",
    [["sleep", "61"], ["sh", "-c", "sleep 62 & sleep 63 & wait"]],
    ids=["the process", "its children"],
)
def test_an_exec_past_its_timeout_is_killed_with_its_children(
    agent: Agent, image: str, command: list[str]
) -> None:
    """Regression: the shell was killed at the deadline but its children lived on."""
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    started = time.monotonic()
    message = assert_rpc_error(
        lambda: exec_sync(agent, container_id, command, timeout=1),
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "timed out after 1",
    )
    took_s = time.monotonic() - started

    assert took_s < 1.5, f"ExecSync returned {took_s:.2f} s after it began: {message}"
    assert sleeps_in(agent, container_id) == []


def test_an_exec_within_its_timeout_returns_its_exit_code(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    result = exec_sync(agent, container_id, ["sh", "-c", "sleep 0.2; exit 3"], timeout=5)

    assert result.exit_code == 3


def test_an_exec_whose_caller_gives_up_leaves_nothing_running(agent: Agent, image: str) -> None:
    """The kubelet's gRPC deadline can pass before the exec's own timeout."""
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    assert_rpc_error(
        lambda: agent.runtime.ExecSync(
            pb.ExecSyncRequest(container_id=container_id, cmd=["sleep", "64"], timeout=0),
            timeout=1,
        ),
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )

    assert wait_until(lambda: sleeps_in(agent, container_id) == [])


# -- 3. ReopenContainerLog returns once the new file is there -------------------------------


def test_the_new_log_file_exists_when_reopen_returns(
    agent: Agent, image: str, tmp_path: Path
) -> None:
    """Regression: the RPC returned before conmon had reopened the file, so the kubelet's
    stat right after its rename found nothing."""
    pod = Pod(agent, log_directory=tmp_path)
    container_id = pod.run(container_config(image, ["sleep", "60"], log_path="c.log"))
    path = tmp_path / "c.log"
    for rotation in range(20):
        path.rename(tmp_path / f"c.log.{rotation}")

        agent.runtime.ReopenContainerLog(
            pb.ReopenContainerLogRequest(container_id=container_id), timeout=RPC_TIMEOUT_S
        )

        assert path.exists(), f"no new log file after reopen {rotation}"


def test_reopen_of_an_unknown_container_is_not_found(agent: Agent) -> None:
    assert_rpc_error(
        lambda: agent.runtime.ReopenContainerLog(
            pb.ReopenContainerLogRequest(container_id=UNKNOWN_ID), timeout=RPC_TIMEOUT_S
        ),
        grpc.StatusCode.NOT_FOUND,
        UNKNOWN_ID,
    )


def test_reopen_of_a_created_container_is_a_failed_precondition(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.create(container_config(image, ["sleep", "60"]))

    assert_rpc_error(
        lambda: agent.runtime.ReopenContainerLog(
            pb.ReopenContainerLogRequest(container_id=container_id), timeout=RPC_TIMEOUT_S
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        container_id,
    )


# -- 8. containers of a stopped pod ---------------------------------------------------------


def test_creating_a_container_in_a_stopped_pod_names_the_pod(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    agent.stop_pod(pod.id)

    assert_rpc_error(
        lambda: pod.create(container_config(image, ["sleep", "60"])),
        grpc.StatusCode.FAILED_PRECONDITION,
        pod.id,
    )


def test_starting_a_container_of_a_stopped_pod_names_the_pod(agent: Agent, image: str) -> None:
    """Regression: the container started in a pod whose network was already torn down."""
    pod = Pod(agent)
    container_id = pod.create(container_config(image, ["sleep", "60"]))
    agent.stop_pod(pod.id)

    assert_rpc_error(
        lambda: start(agent, container_id), grpc.StatusCode.FAILED_PRECONDITION, pod.id
    )
