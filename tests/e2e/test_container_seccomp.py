"""Seccomp as the CRI means it: a container whose request names no profile runs Unconfined,
unless the node's `[security] default_seccomp` says runtime/default; RuntimeDefault is in force
in every container that asks, the first one (whose filter crun compiles) and the later ones
(which reuse that compiled filter)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.containers import Pod, container_config, exec_sync, pulled, status
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry

REUSED = "run.oci.seccomp_bpf_data"
RUNTIME_DEFAULT = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
UNCONFINED = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)


def seccomp_mode(agent: Agent, container_id: str) -> str:
    lines = exec_sync(agent, container_id, ["cat", "/proc/self/status"]).stdout.decode()
    return str(next(line.split()[1] for line in lines.splitlines() if line.startswith("Seccomp:")))


def spec_annotations(agent: Agent, container_id: str) -> dict[str, str]:
    bundle = json.loads(status(agent, container_id, verbose=True).info["info"])["bundle"]
    spec = json.loads((Path(bundle) / "config.json").read_text())
    return dict(spec.get("annotations", {}))


def sleeper(image: str, **security: Any) -> Any:
    return container_config(
        image,
        ["sleep", "60"],
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(**security)
        ),
    )


def test_runtime_default_filters_every_container_and_later_ones_reuse_the_filter(
    agent: Agent, registry: LocalRegistry
) -> None:
    image = pulled(agent, registry)
    pod = Pod(agent)
    first, second = (pod.run(sleeper(image, seccomp=RUNTIME_DEFAULT)) for _ in range(2))

    assert seccomp_mode(agent, first) == "2"
    assert seccomp_mode(agent, second) == "2"
    assert REUSED not in spec_annotations(agent, first)
    assert REUSED in spec_annotations(agent, second)


def test_a_container_that_names_no_profile_is_unconfined(
    agent: Agent, registry: LocalRegistry
) -> None:
    """Regression: an unset profile ran under RuntimeDefault; the CRI says Unconfined (the
    kubelet sends RuntimeDefault explicitly when the pod asks for it)."""
    image = pulled(agent, registry)

    container_id = Pod(agent).run(container_config(image, ["sleep", "60"]))

    assert seccomp_mode(agent, container_id) == "0"


def test_an_unconfined_container_has_no_filter(agent: Agent, registry: LocalRegistry) -> None:
    image = pulled(agent, registry)

    container_id = Pod(agent).run(sleeper(image, seccomp=UNCONFINED))

    assert seccomp_mode(agent, container_id) == "0"


def test_a_node_default_of_runtime_default_filters_unset_profiles_only(
    agent_factory: AgentFactory, registry: LocalRegistry
) -> None:
    agent = agent_factory(
        extra_runtime_config='\n[security]\ndefault_seccomp = "runtime/default"\n'
    )
    image = pulled(agent, registry)
    pod = Pod(agent)

    unset = pod.run(container_config(image, ["sleep", "60"]))
    unconfined = pod.run(sleeper(image, seccomp=UNCONFINED))

    assert seccomp_mode(agent, unset) == "2"
    assert seccomp_mode(agent, unconfined) == "0"


@pytest.mark.parametrize(
    ("path", "mode"),
    [("runtime/default", "2"), ("docker/default", "2"), ("unconfined", "0")],
)
def test_the_deprecated_profile_path_is_honoured(
    agent: Agent, registry: LocalRegistry, path: str, mode: str
) -> None:
    image = pulled(agent, registry)

    container_id = Pod(agent).run(sleeper(image, seccomp_profile_path=path))

    assert seccomp_mode(agent, container_id) == mode


def test_an_unknown_deprecated_profile_path_is_invalid(
    agent: Agent, registry: LocalRegistry
) -> None:
    image = pulled(agent, registry)

    assert_rpc_error(
        lambda: Pod(agent).create(sleeper(image, seccomp_profile_path="strict")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "seccomp_profile_path",
    )
