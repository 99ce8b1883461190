"""Malformed RunPodSandbox requests: the right code, a message naming the field, no residue."""

from __future__ import annotations

import functools
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.pods import assert_rpc_error, pod_config, rpc_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _run_request(agent: Agent, request: Any) -> None:
    agent.runtime.RunPodSandbox(request, timeout=10)


def _assert_nothing_left(agent: Agent) -> None:
    assert agent.leftovers() == []
    assert agent.db_sandbox_count() == 0


def test_missing_config_is_invalid(agent: Agent) -> None:
    assert_rpc_error(lambda: _run_request(agent, pb.RunPodSandboxRequest()), INVALID, "config")
    _assert_nothing_left(agent)


def test_missing_metadata_is_invalid(agent: Agent) -> None:
    request = pb.RunPodSandboxRequest()
    request.config.hostname = "no-metadata"

    assert_rpc_error(lambda: _run_request(agent, request), INVALID, "metadata")
    _assert_nothing_left(agent)


def test_empty_config_is_invalid(agent: Agent) -> None:
    request = pb.RunPodSandboxRequest()
    request.config.SetInParent()

    assert_rpc_error(lambda: _run_request(agent, request), INVALID, "metadata")


@pytest.mark.parametrize("field", ["name", "uid", "namespace"])
def test_empty_metadata_field_is_invalid_naming_the_field(agent: Agent, field: str) -> None:
    config = pod_config()
    setattr(config.metadata, field, "")

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, f"metadata.{field}")
    _assert_nothing_left(agent)


def test_unknown_runtime_handler_is_not_found(agent: Agent) -> None:
    config = pod_config()

    assert_rpc_error(
        lambda: agent.run_pod(config, runtime_handler="kata"), grpc.StatusCode.NOT_FOUND, "kata"
    )
    _assert_nothing_left(agent)
    agent.run_pod(config)  # the name was never taken


def test_non_namespaced_sysctl_is_invalid(agent: Agent) -> None:
    config = pod_config(sysctls={"kernel.panic": "10"})

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "kernel.panic")
    _assert_nothing_left(agent)


def test_net_sysctl_with_the_host_network_is_invalid(agent: Agent) -> None:
    config = pod_config(network=pb.NODE, sysctls={"net.ipv4.ip_unprivileged_port_start": "80"})

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "net.ipv4.ip_unprivileged_port_start")
    _assert_nothing_left(agent)


def test_ipc_sysctl_with_the_host_ipc_namespace_is_invalid(agent: Agent) -> None:
    config = pod_config(ipc=pb.NODE, sysctls={"kernel.shm_rmid_forced": "1"})

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "kernel.shm_rmid_forced")
    _assert_nothing_left(agent)


def test_nonexistent_sysctl_is_invalid_and_leaves_nothing_behind(agent: Agent) -> None:
    """The sysctl is written last, inside the pod's namespaces: every earlier step is undone."""
    config = pod_config(sysctls={"net.ipv4.e2e_no_such_knob": "1"})

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "net.ipv4.e2e_no_such_knob")

    _assert_nothing_left(agent)


FAILED_RUNS = {
    # Refused before the name is reserved.
    "unknown-handler": (pod_config(), "kata"),
    "non-namespaced-sysctl": (pod_config(sysctls={"kernel.panic": "1"}), ""),
    # Refused while the pod's kernel objects are being built: the reservation is undone.
    "nonexistent-sysctl": (pod_config(sysctls={"net.ipv4.e2e_no_such_knob": "1"}), ""),
    "blank-dns-server": (pod_config(dns=pb.DNSConfig(servers=[" "])), ""),
}


@pytest.mark.parametrize("case", list(FAILED_RUNS))
def test_a_failed_run_frees_the_name(agent: Agent, case: str) -> None:
    bad_config, handler = FAILED_RUNS[case]
    error = rpc_error(lambda: agent.run_pod(bad_config, runtime_handler=handler))
    assert error.code() in (INVALID, grpc.StatusCode.NOT_FOUND), error.details()
    good_config = pod_config()
    good_config.metadata.CopyFrom(bad_config.metadata)

    pod_id = agent.run_pod(good_config)

    assert agent.pod_status(pod_id).metadata == bad_config.metadata
    assert agent.pod_status(pod_id).state == pb.SANDBOX_READY


def test_invalid_sysctl_value_is_invalid_and_leaves_nothing_behind(agent: Agent) -> None:
    config = pod_config(sysctls={"net.ipv4.ip_unprivileged_port_start": "not-a-number"})

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "ip_unprivileged_port_start")
    _assert_nothing_left(agent)


def test_blank_dns_server_is_invalid_and_leaves_nothing_behind(agent: Agent) -> None:
    config = pod_config(dns=pb.DNSConfig(servers=["10.96.0.10", " "]))

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "dns_config")
    _assert_nothing_left(agent)


def test_target_namespace_mode_is_invalid_for_a_pod(agent: Agent) -> None:
    config = pod_config(pid=pb.TARGET)

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "pid")
    _assert_nothing_left(agent)


def test_cgroup_parent_with_dotdot_is_invalid(agent: Agent) -> None:
    config = pod_config()
    config.linux.cgroup_parent = "/moorage-e2e/../../escape"

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "cgroup_parent")
    _assert_nothing_left(agent)


def test_out_of_range_port_is_invalid(agent: Agent) -> None:
    config = pod_config()
    config.port_mappings.add(protocol=pb.TCP, container_port=80, host_port=70000)

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "host_port")
    _assert_nothing_left(agent)


def test_one_host_port_published_twice_by_a_pod_is_invalid(agent: Agent) -> None:
    """Regression: the second mapping silently replaced the first one's DNAT rule."""
    config = pod_config()
    config.port_mappings.add(protocol=pb.TCP, container_port=80, host_port=18080)
    config.port_mappings.add(protocol=pb.TCP, container_port=81, host_port=18080)

    assert_rpc_error(lambda: agent.run_pod(config), INVALID, "port_mappings[1]", "18080")
    _assert_nothing_left(agent)


def test_one_host_port_for_two_protocols_or_addresses_is_valid(agent: Agent) -> None:
    config = pod_config()
    config.port_mappings.add(protocol=pb.TCP, container_port=53, host_port=18053)
    config.port_mappings.add(protocol=pb.UDP, container_port=53, host_port=18053)
    config.port_mappings.add(
        protocol=pb.TCP, container_port=80, host_port=18081, host_ip="127.0.0.1"
    )
    config.port_mappings.add(
        protocol=pb.TCP, container_port=81, host_port=18081, host_ip="127.0.0.2"
    )

    pod_id = agent.run_pod(config)

    assert agent.pod_status(pod_id).state == pb.SANDBOX_READY


def test_status_with_an_empty_id_is_invalid(agent: Agent) -> None:
    assert_rpc_error(lambda: agent.pod_status(""), INVALID, "pod_sandbox_id")


def test_an_ambiguous_id_prefix_is_invalid(agent: Agent) -> None:
    by_first_digit: dict[str, str] = {}
    while True:
        pod_id = agent.run_pod(pod_config(pid=pb.CONTAINER))
        if pod_id[0] in by_first_digit:
            break
        by_first_digit[pod_id[0]] = pod_id

    assert_rpc_error(lambda: agent.pod_status(pod_id[0]), INVALID, "ambiguous")


def test_missing_infra_binary_fails_the_pod_and_leaves_nothing_behind(
    agent_factory: AgentFactory,
) -> None:
    agent = agent_factory(extra_runtime_config='infra_command = ["/nonexistent/e2e-init"]\n')
    config = pod_config(pid=pb.POD)

    assert_rpc_error(
        lambda: agent.run_pod(config), grpc.StatusCode.FAILED_PRECONDITION, "/nonexistent/e2e-init"
    )
    _assert_nothing_left(agent)
    # Pods without a shared PID namespace need no infra process.
    agent.run_pod(pod_config(pid=pb.CONTAINER))


def test_the_agent_survives_every_malformed_request(agent: Agent) -> None:
    bad_configs = [
        pod_config(sysctls={"kernel.panic": "1"}),
        pod_config(sysctls={"net.ipv4.e2e_no_such_knob": "1"}),
        pod_config(pid=pb.TARGET),
    ]
    for config in bad_configs:
        assert_rpc_error(functools.partial(agent.run_pod, config), INVALID)

    assert agent.running
    assert agent.run_pod(pod_config())


def test_relative_log_directory_is_invalid(agent: Agent) -> None:
    """Regression: a relative log_directory was created below the agent's working directory."""
    config = pod_config()
    config.log_directory = "e2e-relative/logs"

    error = rpc_error(lambda: agent.run_pod(config))

    assert not (agent.base_dir / "e2e-relative").exists()  # the agent runs in base_dir
    assert error.code() == INVALID, error.details()
    assert "log_directory" in error.details()
    _assert_nothing_left(agent)


def test_uncreatable_log_directory_fails_naming_the_field(agent: Agent) -> None:
    """Regression: it failed as INTERNAL with a bare FileNotFoundError."""
    config = pod_config()
    config.log_directory = "/proc/e2e-no-such-dir/logs"

    error = rpc_error(lambda: agent.run_pod(config))

    assert error.code() in (INVALID, grpc.StatusCode.FAILED_PRECONDITION), error.details()
    assert "log_directory" in error.details()
    _assert_nothing_left(agent)


def test_log_directory_is_created(agent: Agent) -> None:
    log_directory = agent.base_dir / "pod-logs" / "e2e"
    config = pod_config()
    config.log_directory = str(log_directory)

    agent.run_pod(config)

    assert log_directory.is_dir()
