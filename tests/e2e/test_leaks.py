"""Many pod lifecycles, then nothing may remain: mounts, pins, dirs, cgroups, rows, processes."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.kernel import ProcessId, is_alive, process_id
from tests.e2e.pods import assert_rpc_error, pod_config, rpc_error
from tests.waiting import wait_until

CYCLES = 50
# grpc and sqlite may open a few descriptors lazily; a leak per pod would show as >= 50.
FD_MARGIN = 8


def _cycle_config(index: int) -> Any:
    pid_mode = pb.POD if index % 2 == 0 else pb.CONTAINER
    if index % 5 == 0:
        return pod_config(
            pid=pid_mode,
            hostname=f"leak-{index}",
            sysctls={"net.ipv4.ip_unprivileged_port_start": "1000", "kernel.shm_rmid_forced": "1"},
            dns=pb.DNSConfig(servers=["10.96.0.10"], searches=["svc"], options=["ndots:2"]),
        )
    if index % 7 == 0:
        return pod_config(pid=pid_mode, network=pb.NODE, ipc=pb.NODE)
    return pod_config(pid=pid_mode)


def _run_stop_remove(agent: Agent, index: int, infras: set[ProcessId]) -> None:
    pod_id = agent.run_pod(_cycle_config(index))
    info = agent.pod_info(pod_id)
    infra_pid = info["pids"].get("infra")
    assert (infra_pid is not None) == (index % 2 == 0), info
    if infra_pid is not None:
        infra = process_id(infra_pid)
        assert infra is not None
        infras.add(infra)
    agent.stop_pod(pod_id)
    agent.remove_pod(pod_id)


def test_fifty_run_stop_remove_cycles_leave_nothing_behind(agent: Agent) -> None:
    infras: set[ProcessId] = set()
    for index in range(3):  # warm-up: lazily opened descriptors are not leaks
        _run_stop_remove(agent, index, infras)
    fds_before = agent.fd_count()

    for index in range(CYCLES):
        _run_stop_remove(agent, index, infras)
        if index % 10 == 9:
            # A failed run now and then: its undo path must not leak either.
            config = pod_config(sysctls={"net.ipv4.e2e_no_such_knob": "1"})
            assert_rpc_error(
                functools.partial(agent.run_pod, config), grpc.StatusCode.INVALID_ARGUMENT
            )

    pod_pid_cycles = [i for i in (*range(3), *range(CYCLES)) if i % 2 == 0]
    assert len(infras) == len(pod_pid_cycles)
    assert wait_until(lambda: not any(is_alive(p) for p in infras))
    assert agent.leftovers() == []
    assert agent.list_pods() == []
    assert agent.db_sandbox_count() == 0
    fds_after = agent.fd_count()
    assert fds_after <= fds_before + FD_MARGIN, (fds_before, fds_after)
    assert agent.running


def test_concurrent_runs_and_removals_leave_nothing_behind(agent: Agent) -> None:
    # One pod first, so the shared cgroup parent exists before the burst.
    agent.remove_pod(agent.run_pod(pod_config()))
    configs = [pod_config(pid=pb.POD if i % 2 else pb.CONTAINER) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        pod_ids = list(pool.map(agent.run_pod, configs))

        assert len(set(pod_ids)) == len(configs)
        assert agent.list_pod_ids() == set(pod_ids)
        list(pool.map(agent.remove_pod, pod_ids))

    assert agent.leftovers() == []
    assert agent.db_sandbox_count() == 0


def test_concurrent_runs_of_one_name_create_exactly_one_pod(agent: Agent) -> None:
    config = pod_config()

    def attempt(_: int) -> str:
        try:
            return agent.run_pod(config)
        except grpc.RpcError as error:
            return f"error:{error.code().name}"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(attempt, range(6)))

    winners = [o for o in outcomes if not o.startswith("error:")]
    assert len(winners) == 1, outcomes
    assert sorted(set(outcomes) - set(winners)) == ["error:ALREADY_EXISTS"]
    assert agent.list_pod_ids() == set(winners)
    assert rpc_error(lambda: agent.run_pod(config)).code() == grpc.StatusCode.ALREADY_EXISTS


def _outcome(agent: Agent, config: Any) -> str:
    try:
        return agent.run_pod(config)
    except grpc.RpcError as error:
        return f"error:{error.code().name}: {error.details()}"


def test_concurrent_first_pods_under_a_new_cgroup_parent_all_start(agent: Agent) -> None:
    """Regression: pods racing to create a new v1 cpuset parent got ENOSPC (empty cpuset)."""
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        for batch in range(8):
            configs = [pod_config() for _ in range(6)]
            for config in configs:
                config.linux.cgroup_parent = f"{agent.cgroup_parent}/batch-{batch}"
            outcomes = list(pool.map(functools.partial(_outcome, agent), configs))
            failures += [o for o in outcomes if o.startswith("error:")]
    assert failures == []
