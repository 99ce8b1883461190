"""The RuntimeDefault seccomp profile is in force in every container, the first one (whose
filter crun compiles) and the later ones (which reuse that compiled filter)."""

from __future__ import annotations

import json
from pathlib import Path

from cri_api.v1 import api_pb2 as pb

from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, exec_sync, pulled, status
from tests.registry_fixture import LocalRegistry

REUSED = "run.oci.seccomp_bpf_data"


def seccomp_mode(agent: Agent, container_id: str) -> str:
    lines = exec_sync(agent, container_id, ["cat", "/proc/self/status"]).stdout.decode()
    return str(next(line.split()[1] for line in lines.splitlines() if line.startswith("Seccomp:")))


def spec_annotations(agent: Agent, container_id: str) -> dict[str, str]:
    bundle = json.loads(status(agent, container_id, verbose=True).info["info"])["bundle"]
    spec = json.loads((Path(bundle) / "config.json").read_text())
    return dict(spec.get("annotations", {}))


def test_every_container_is_filtered_and_later_ones_reuse_the_compiled_filter(
    agent: Agent, registry: LocalRegistry
) -> None:
    image = pulled(agent, registry)
    pod = Pod(agent)
    first, second = (pod.run(container_config(image, ["sleep", "60"])) for _ in range(2))

    assert seccomp_mode(agent, first) == "2"
    assert seccomp_mode(agent, second) == "2"
    assert REUSED not in spec_annotations(agent, first)
    assert REUSED in spec_annotations(agent, second)


def test_an_unconfined_container_has_no_filter(agent: Agent, registry: LocalRegistry) -> None:
    image = pulled(agent, registry)
    pod = Pod(agent)
    unconfined = pb.LinuxContainerSecurityContext(
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    )
    config = container_config(
        image, ["sleep", "60"], linux=pb.LinuxContainerConfig(security_context=unconfined)
    )

    container_id = pod.run(config)

    assert seccomp_mode(agent, container_id) == "0"
