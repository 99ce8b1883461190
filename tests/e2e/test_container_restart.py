"""Containers outlive the agent: kill -9 and restart, a simulated host reboot, and a leak
check over many pod+container cycles."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import (
    Pod,
    container_config,
    exec_sync,
    pulled,
    status,
    wait_for_exit,
)
from tests.e2e.pods import pod_config
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

CYCLES = 50


def test_kill_9_of_the_agent_keeps_containers_and_their_exits(
    agent: Agent, registry: LocalRegistry
) -> None:
    image = pulled(agent, registry)
    pod = Pod(agent)
    running = pod.run(container_config(image, ["sleep", "60"]))
    exiting = pod.run(container_config(image, ["sh", "-c", "read x; exit 5"], stdin=True))
    pid_before = os.stat(f"/proc/{_pid(agent, running)}").st_ino

    agent.kill9()
    exit_file = agent.run_dir / "exits" / exiting
    # Ends the second container while no agent runs: its conmon closes its stdin.
    for pid in _pids_in_cgroup(agent, pod, exiting):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(exit_file.exists)
    agent.start()

    assert status(agent, running).status.state == pb.CONTAINER_RUNNING
    assert os.stat(f"/proc/{_pid(agent, running)}").st_ino == pid_before
    assert exec_sync(agent, running, ["true"]).exit_code == 0
    gone = status(agent, exiting).status
    assert (gone.state, gone.exit_code) == (pb.CONTAINER_EXITED, 137)


def test_after_a_host_reboot_containers_are_exited_with_reason_unknown(
    agent: Agent, registry: LocalRegistry
) -> None:
    image = pulled(agent, registry)
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    agent.kill9()
    # A reboot takes every process and the tmpfs holding the exit files.
    for pid in agent.conmons():
        os.kill(pid, signal.SIGKILL)
    for pid in _pids_in_cgroup(agent, pod, container_id):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not agent.conmons())
    for exit_file in (agent.run_dir / "exits").iterdir():
        exit_file.unlink()
    agent.start()

    final = status(agent, container_id).status
    assert (final.state, final.reason) == (pb.CONTAINER_EXITED, "Unknown")


def test_pod_and_container_cycles_leave_nothing_behind(
    agent: Agent, registry: LocalRegistry, tmp_path: Path
) -> None:
    image = pulled(agent, registry)
    warm = Pod(agent, log_directory=tmp_path / "warm")
    wait_for_exit(agent, warm.run(container_config(image, ["true"], log_path="c.log")))
    agent.remove_pod(warm.id)
    fds_before = agent.fd_count()

    for cycle in range(CYCLES):
        pod = Pod(agent, log_directory=tmp_path / str(cycle))
        container_id = pod.run(container_config(image, ["echo", "hi"], log_path="c.log"))
        wait_for_exit(agent, container_id)
        agent.stop_pod(pod.id)
        agent.remove_pod(pod.id)

    assert agent.leftovers() == []
    assert agent.fd_count() <= fds_before + 2


def _pid(agent: Agent, container_id: str) -> int:
    info = json.loads(status(agent, container_id, verbose=True).info["info"])
    return int(info["pid"])


def _pids_in_cgroup(agent: Agent, pod: Pod, container_id: str) -> list[int]:
    rows = [row for row in agent.db_rows() if row["id"] == pod.id]
    cgroup = rows[0]["cgroup_path"].strip("/")
    procs = Path("/sys/fs/cgroup/memory") / cgroup / container_id / "cgroup.procs"
    return [int(pid) for pid in procs.read_text().split()]


def test_a_runc_pod_leaves_nothing_behind_either(agent: Agent, registry: LocalRegistry) -> None:
    """runc also mirrors its cgroups into the unified tree of a hybrid host."""
    image = pulled(agent, registry)
    config = pod_config()
    pod_id = agent.run_pod(config, runtime_handler="runc")
    container_id = agent.runtime.CreateContainer(
        pb.CreateContainerRequest(
            pod_sandbox_id=pod_id,
            config=container_config(image, ["echo", "hi"]),
            sandbox_config=config,
        )
    ).container_id
    agent.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id))
    wait_for_exit(agent, container_id)

    agent.remove_pod(pod_id)

    assert agent.leftovers() == []
