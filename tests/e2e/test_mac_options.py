"""AppArmor and SELinux on a host that has neither: a request the host cannot honour fails
loudly and leaves nothing; unconfined and SELinux options (ignored without SELinux) run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, exec_sync, list_containers, pulled
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry

pytestmark = pytest.mark.skipif(
    Path("/sys/module/apparmor/parameters/enabled").exists()
    or Path("/sys/fs/selinux/enforce").exists(),
    reason="these cases are about a host without AppArmor and SELinux",
)


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


def secured(image: str, context: Any) -> Any:
    return container_config(
        image, ["sleep", "60"], linux=pb.LinuxContainerConfig(security_context=context)
    )


@pytest.mark.parametrize(
    "profile",
    [
        pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
        pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref="k8s-x"),
    ],
    ids=["runtime-default", "localhost"],
)
def test_an_apparmor_profile_without_apparmor_fails(agent: Agent, image: str, profile: Any) -> None:
    pod = Pod(agent)
    config = secured(image, pb.LinuxContainerSecurityContext(apparmor=profile))

    assert_rpc_error(lambda: pod.create(config), grpc.StatusCode.FAILED_PRECONDITION, "AppArmor")

    assert list_containers(agent) == []
    assert agent.db_container_ids() == []


def test_unconfined_apparmor_and_selinux_options_run(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    context = pb.LinuxContainerSecurityContext(
        apparmor=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined),
        selinux_options=pb.SELinuxOption(type="container_t", level="s0:c1,c2"),
    )

    container_id = pod.run(secured(image, context))

    assert exec_sync(agent, container_id, ["true"]).exit_code == 0
