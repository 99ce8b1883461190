"""Version, Status, RuntimeConfig, UpdateRuntimeConfig, ImageFsInfo and unbuilt RPCs."""

from __future__ import annotations

import json
import os
import stat
from importlib.metadata import version
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.pods import assert_rpc_error, pod_config
from tests.waiting import wait_until

MIB = 1024 * 1024


def _conditions(agent: Agent) -> dict[str, Any]:
    status = agent.runtime.Status(pb.StatusRequest()).status
    return {condition.type: condition for condition in status.conditions}


def _verbose_info(agent: Agent) -> dict[str, str]:
    return dict(agent.runtime.Status(pb.StatusRequest(verbose=True)).info)


def test_version_names_moorage_and_cri_v1(agent: Agent) -> None:
    answer = agent.runtime.Version(pb.VersionRequest())

    assert answer.runtime_name == "moorage"
    assert answer.runtime_api_version == "v1"
    assert answer.runtime_version == version("moorage")


def test_status_reports_the_runtime_ready(agent: Agent) -> None:
    conditions = _conditions(agent)

    assert conditions["RuntimeReady"].status is True


def test_status_explains_a_network_that_is_not_ready(agent: Agent) -> None:
    network = _conditions(agent)["NetworkReady"]

    if not network.status:
        assert network.reason
        assert network.message


def test_status_without_verbose_has_no_info(agent: Agent) -> None:
    assert _verbose_info(agent) != {}
    assert dict(agent.runtime.Status(pb.StatusRequest()).info) == {}


def test_verbose_status_shows_the_effective_config(agent: Agent) -> None:
    config = json.loads(_verbose_info(agent)["config"])

    assert config["runtime"]["default_cgroup_parent"] == agent.cgroup_parent
    assert config["root_dir"] == str(agent.root_dir)
    assert config["run_dir"] == str(agent.run_dir)
    assert config["socket"] == str(agent.socket)
    assert config["shutdown_grace_s"] == 2.0


def test_runtime_config_reports_the_cgroupfs_driver(agent: Agent) -> None:
    answer = agent.runtime.RuntimeConfig(pb.RuntimeConfigRequest())

    assert answer.linux.cgroup_driver == pb.CGROUPFS


def _update_pod_cidr(agent: Agent, cidr: str) -> None:
    agent.runtime.UpdateRuntimeConfig(
        pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr=cidr))
        )
    )


def test_update_runtime_config_stores_the_pod_cidr(agent: Agent) -> None:
    assert _verbose_info(agent)["podCIDR"] != "10.244.0.0/16"

    _update_pod_cidr(agent, "10.244.0.0/16")

    assert _verbose_info(agent)["podCIDR"] == "10.244.0.0/16"


def test_pod_cidr_survives_an_agent_restart(agent: Agent) -> None:
    _update_pod_cidr(agent, "10.245.0.0/16")

    agent.restart()

    assert _verbose_info(agent)["podCIDR"] == "10.245.0.0/16"


@pytest.mark.parametrize("cidr", ["10.244.0.0/33", "not-a-cidr", "10.244.0.1/16"])
def test_update_runtime_config_rejects_a_malformed_cidr(agent: Agent, cidr: str) -> None:
    before = _verbose_info(agent)["podCIDR"]

    assert_rpc_error(
        lambda: _update_pod_cidr(agent, cidr), grpc.StatusCode.INVALID_ARGUMENT, "pod_cidr", cidr
    )
    assert _verbose_info(agent)["podCIDR"] == before


def test_image_fs_info_reports_filesystems_under_the_root_dir(agent: Agent) -> None:
    answer = agent.images.ImageFsInfo(pb.ImageFsInfoRequest())

    assert len(answer.image_filesystems) == 1
    assert len(answer.container_filesystems) == 1
    for usage in (*answer.image_filesystems, *answer.container_filesystems):
        mountpoint = Path(usage.fs_id.mountpoint)
        assert mountpoint.is_relative_to(agent.root_dir), mountpoint
        assert mountpoint.is_dir()
        assert usage.timestamp > 0
        assert usage.HasField("used_bytes")
        assert usage.HasField("inodes_used")


def test_unbuilt_runtime_rpc_answers_unimplemented_naming_the_method(agent: Agent) -> None:
    request = pb.CheckpointContainerRequest(container_id="c0ffee")

    assert_rpc_error(
        lambda: agent.runtime.CheckpointContainer(request),
        grpc.StatusCode.UNIMPLEMENTED,
        "CheckpointContainer",
    )


def test_unbuilt_rpc_answers_unimplemented_naming_the_method(agent: Agent) -> None:
    assert_rpc_error(
        lambda: agent.runtime.CheckpointPod(pb.CheckpointPodRequest(pod_sandbox_id="c0ffee")),
        grpc.StatusCode.UNIMPLEMENTED,
        "CheckpointPod",
    )


def test_the_agent_keeps_answering_after_failed_calls(agent: Agent) -> None:
    for _ in range(3):
        assert_rpc_error(
            lambda: agent.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="c0ffee")),
            grpc.StatusCode.NOT_FOUND,
        )

    assert agent.runtime.Version(pb.VersionRequest()).runtime_name == "moorage"
    assert agent.running


def test_image_fs_info_reports_the_real_usage_of_the_image_store(agent: Agent) -> None:
    before = agent.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0]
    blob = Path(before.fs_id.mountpoint) / "e2e-blob"
    blob.write_bytes(os.urandom(MIB))

    after = agent.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0]

    assert after.used_bytes.value >= before.used_bytes.value + MIB
    assert after.inodes_used.value == before.inodes_used.value + 1
    assert after.timestamp >= before.timestamp


def test_status_advertises_the_features_the_agent_has(agent: Agent) -> None:
    features = agent.runtime.Status(pb.StatusRequest()).features

    assert features.supplemental_groups_policy
    assert features.mount_options
    assert features.user_namespaces_host_network


def test_status_lists_the_configured_runtime_handlers(agent: Agent) -> None:
    handlers = agent.runtime.Status(pb.StatusRequest()).runtime_handlers

    assert {"crun", "runc"} <= {handler.name for handler in handlers}


def test_every_handler_advertises_recursive_read_only_mounts(agent: Agent) -> None:
    handlers = agent.runtime.Status(pb.StatusRequest()).runtime_handlers

    assert "" in {handler.name for handler in handlers}
    assert all(handler.features.recursive_read_only_mounts for handler in handlers)


def test_the_socket_is_a_unix_socket_of_mode_0660(agent: Agent) -> None:
    mode = os.stat(agent.socket).st_mode

    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def test_every_call_is_logged_with_method_code_and_object_id(agent: Agent) -> None:
    pod_id = agent.run_pod(pod_config())
    assert_rpc_error(lambda: agent.pod_status("0" * 64), grpc.StatusCode.NOT_FOUND)

    def logged(*parts: str) -> bool:
        return any(all(p in line for p in parts) for line in agent.log_text().splitlines())

    assert wait_until(lambda: logged("RunPodSandbox", "OK", pod_id))
    assert wait_until(lambda: logged("PodSandboxStatus", "NOT_FOUND", "0" * 64))
