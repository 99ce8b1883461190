"""The agent's own life: kill -9 and restart, SIGTERM, and agents side by side."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import MOORAGE, Agent, AgentFactory
from tests.e2e.kernel import (
    ProcessId,
    children_of,
    is_alive,
    mount_at,
    process_id,
    process_name,
)
from tests.e2e.pods import assert_rpc_error, pod_config
from tests.waiting import wait_until


def _snapshot(agent: Agent) -> dict[str, tuple[Any, ...]]:
    """What kubelet sees of each pod: id -> (state, metadata, labels, annotations, created)."""
    return {
        pod.id: (
            pod.state,
            pod.metadata.SerializeToString(deterministic=True),
            dict(pod.labels),
            dict(pod.annotations),
            pod.created_at,
            pod.runtime_handler,
        )
        for pod in agent.list_pods()
    }


def test_pods_keep_ids_states_and_infra_across_kill9_and_restart(agent: Agent) -> None:
    ready_ids = [
        agent.run_pod(pod_config(labels={"n": "1"}, annotations={"a": "x"})),
        agent.run_pod(pod_config(labels={"n": "2"}), runtime_handler="runc"),
    ]
    stopped_id = agent.run_pod(pod_config(labels={"n": "3"}))
    agent.stop_pod(stopped_id)
    before = _snapshot(agent)
    infos = {pod_id: agent.pod_info(pod_id) for pod_id in ready_ids}
    infras = {pod_id: process_id(info["pids"]["infra"]) for pod_id, info in infos.items()}

    agent.kill9()
    agent.start()

    assert _snapshot(agent) == before
    assert before[stopped_id][0] == pb.SANDBOX_NOTREADY
    for pod_id in ready_ids:
        assert agent.pod_status(pod_id).state == pb.SANDBOX_READY
        info = agent.pod_info(pod_id)
        assert info["pids"] == infos[pod_id]["pids"]
        assert info["pins"] == infos[pod_id]["pins"]
        infra = infras[pod_id]
        assert infra is not None and is_alive(infra)
        for pin in info["pins"].values():
            assert mount_at(pin) is not None, pin
    # Stop and remove still work on pods the new agent process did not start.
    agent.stop_pod(ready_ids[0])
    first_infra = infras[ready_ids[0]]
    assert first_infra is not None
    assert wait_until(lambda: not is_alive(first_infra))
    assert agent.pod_status(ready_ids[0]).state == pb.SANDBOX_NOTREADY
    for pod_id in (*ready_ids, stopped_id):
        agent.remove_pod(pod_id)
    assert agent.leftovers() == []


def test_a_pod_whose_infra_died_while_the_agent_was_down_is_not_ready(agent: Agent) -> None:
    victim_id = agent.run_pod(pod_config())
    survivor_id = agent.run_pod(pod_config())
    victim_info = agent.pod_info(victim_id)
    victim = process_id(victim_info["pids"]["infra"])
    assert victim is not None

    agent.kill9()
    os.kill(victim.pid, signal.SIGKILL)
    assert wait_until(lambda: not is_alive(victim))
    agent.start()

    assert agent.pod_status(victim_id).state == pb.SANDBOX_NOTREADY
    assert agent.pod_status(survivor_id).state == pb.SANDBOX_READY
    recovery_lines = [
        line for line in agent.log_text().splitlines() if "recovered" in line and victim_id in line
    ]
    assert recovery_lines, agent.log_tail()
    assert any(str(victim.pid) in line for line in recovery_lines), recovery_lines
    for pin in victim_info["pins"].values():
        assert mount_at(pin) is None, pin
    agent.remove_pod(victim_id)
    assert agent.list_pod_ids() == {survivor_id}


def test_a_pod_whose_pin_vanished_while_the_agent_was_down_is_not_ready(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config(pid=pb.CONTAINER))
    net_pin = agent.pod_info(pod_id)["pins"]["net"]

    agent.kill9()
    subprocess.run(["umount", "-l", net_pin], check=True)
    agent.start()

    assert agent.pod_status(pod_id).state == pb.SANDBOX_NOTREADY
    assert any("recovered" in line and net_pin in line for line in agent.log_text().splitlines())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_agent_exits_0_removes_the_socket_and_leaves_pods_running(
    agent: Agent, sig: signal.Signals
) -> None:
    pod_id = agent.run_pod(pod_config())
    info = agent.pod_info(pod_id)
    infra = process_id(info["pids"]["infra"])
    assert infra is not None

    assert agent.terminate(sig=sig) == 0

    assert not agent.socket.exists()
    assert is_alive(infra)
    for pin in info["pins"].values():
        assert mount_at(pin) is not None, pin
    assert mount_at(info["shm"]) is not None
    agent.start()
    assert agent.pod_status(pod_id).state == pb.SANDBOX_READY
    assert agent.pod_info(pod_id)["pids"] == info["pids"]


def test_two_agents_side_by_side_each_see_only_their_own_pods(
    agent_factory: AgentFactory,
) -> None:
    first = agent_factory()
    second = agent_factory()
    # The same pod name in both: reservations are per agent.
    config = pod_config()
    first_id = first.run_pod(config)
    second_id = second.run_pod(config)

    assert first.list_pod_ids() == {first_id}
    assert second.list_pod_ids() == {second_id}
    assert_rpc_error(lambda: first.pod_status(second_id), grpc.StatusCode.NOT_FOUND)
    for pin in second.pod_info(second_id)["pins"].values():
        assert pin.startswith(f"{second.run_dir}/")
    first.remove_pod(second_id)
    assert second.pod_status(second_id).state == pb.SANDBOX_READY
    first.remove_pod(first_id)
    assert first.leftovers() == []
    assert second.list_pod_ids() == {second_id}


def _serve(
    agent: Agent, *, socket: str, root: str, run_dir: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(MOORAGE),
            "serve",
            "--config",
            str(agent.config_path),
            "--socket",
            socket,
            "--root",
            root,
            "--run-dir",
            run_dir,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_a_second_agent_on_the_same_root_dir_refuses_to_start(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    other = agent.base_dir / "other"

    result = _serve(
        agent, socket=str(other / "s.sock"), root=str(agent.root_dir), run_dir=str(other / "run")
    )

    assert result.returncode != 0
    assert "another moorage agent" in result.stderr
    assert str(agent.root_dir) in result.stderr
    assert not (other / "s.sock").exists()
    assert agent.pod_status(pod_id).state == pb.SANDBOX_READY


def test_a_second_agent_on_the_same_socket_refuses_to_start(agent: Agent) -> None:
    other = agent.base_dir / "other"

    result = _serve(
        agent, socket=str(agent.socket), root=str(other / "root"), run_dir=str(other / "run")
    )

    assert result.returncode != 0
    assert str(agent.socket) in result.stderr
    assert agent.runtime.Version(pb.VersionRequest()).runtime_name == "moorage"


def _is_gone(proc: ProcessId) -> bool:
    return not is_alive(proc)


def _kill9_when(agent: Agent, config: Any, moment: Callable[[], int | None]) -> int | None:
    """Send RunPodSandbox and kill -9 the agent the moment `moment()` returns a value.

    Returns that value, or None when the call finished first (the pod is then whole).
    """
    call = agent.runtime.RunPodSandbox.future(pb.RunPodSandboxRequest(config=config), timeout=10)
    agent_pid = agent.pid
    seen = None
    while not call.done():
        seen = moment()
        if seen is not None:
            os.kill(agent_pid, signal.SIGKILL)
            break
    agent.kill9()
    with contextlib.suppress(grpc.RpcError):
        call.result()
    return seen


def _assert_whole_pods_only(agent: Agent) -> None:
    """Every listed pod is READY with its pins mounted; nothing else is left."""
    for pod in agent.list_pods():
        assert pod.state == pb.SANDBOX_READY
        for pin in agent.pod_info(pod.id)["pins"].values():
            assert mount_at(pin) is not None, pin
        agent.remove_pod(pod.id)
    assert agent.leftovers() == []


def test_kill9_during_run_pod_sandbox_leaves_a_whole_pod_or_nothing(agent: Agent) -> None:
    """Pods without infra: the crash lands while dirs, mounts, cgroups and pins are made."""
    sandboxes_run_dir = agent.run_dir / "sandboxes"

    def building() -> int | None:
        return 1 if sandboxes_run_dir.is_dir() and any(sandboxes_run_dir.iterdir()) else None

    for _ in range(4):
        _kill9_when(agent, pod_config(pid=pb.CONTAINER), building)
        agent.start()
        _assert_whole_pods_only(agent)


def test_kill9_while_the_infra_process_starts_leaves_no_infra_behind(agent: Agent) -> None:
    """Regression: catatonit leaked (and blocked the next start) when the agent died before
    the READY commit recorded its pid."""

    def infra_started() -> int | None:
        started = [pid for pid in children_of(agent.pid) if process_name(pid) == "catatonit"]
        return started[0] if started else None

    for _ in range(4):
        infra_pid = _kill9_when(agent, pod_config(pid=pb.POD), infra_started)
        infra = process_id(infra_pid) if infra_pid is not None else None
        if infra is not None:
            agent.seen_infra.add(infra)  # so teardown ends it whatever happens
        agent.start()
        _assert_whole_pods_only(agent)
        if infra is not None:
            assert wait_until(functools.partial(_is_gone, infra)), f"infra {infra.pid} leaked"
