"""Mount.mount_options: the flags asked for are on the container's bind and enforced there,
with crun and with runc; options outside the allowlist fail CreateContainer cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, exec_sync, pulled, status
from tests.e2e.pods import assert_rpc_error
from tests.e2e.test_container_errors import assert_nothing_left
from tests.registry_fixture import LocalRegistry

SCRIPT = "#!/bin/sh\necho ran\n"


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A host directory holding an executable script."""
    directory = tmp_path / "vol"
    directory.mkdir()
    script = directory / "run.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    return directory


def with_options(image: str, host: Path, options: list[str]) -> Any:
    config = container_config(image, ["sleep", "60"])
    config.mounts.append(
        pb.Mount(container_path="/vol", host_path=str(host), mount_options=options)
    )
    return config


def vol_flags(agent: Agent, container_id: str) -> set[str]:
    """The per-mount options of /vol as the container's mountinfo shows them."""
    info = exec_sync(agent, container_id, ["cat", "/proc/self/mountinfo"]).stdout.decode()
    (line,) = [fields for fields in map(str.split, info.splitlines()) if fields[4] == "/vol"]
    return set(line[5].split(","))


@pytest.mark.parametrize("handler", ["crun", "runc"])
def test_noexec_nosuid_nodev_are_set_on_the_bind_and_enforced(
    agent: Agent, image: str, volume: Path, handler: str
) -> None:
    pod = Pod(agent, runtime_handler=handler)
    plain = pod.run(with_options(image, volume, []))
    restricted = pod.run(with_options(image, volume, ["noexec", "nosuid", "nodev"]))

    # Through a shell: exec'ing it directly fails the ExecSync call itself.
    assert exec_sync(agent, plain, ["sh", "-c", "/vol/run.sh"]).stdout == b"ran\n"
    assert {"noexec", "nosuid", "nodev"} <= vol_flags(agent, restricted)
    refused = exec_sync(agent, restricted, ["sh", "-c", "/vol/run.sh"])
    assert refused.exit_code == 126
    assert b"Permission denied" in refused.stderr
    (mount,) = status(agent, restricted).status.mounts
    assert list(mount.mount_options) == ["noexec", "nosuid", "nodev"]


@pytest.mark.parametrize("handler", ["crun", "runc"])
def test_atime_flags_are_set_on_the_bind(
    agent: Agent, image: str, volume: Path, handler: str
) -> None:
    pod = Pod(agent, runtime_handler=handler)

    container_id = pod.run(with_options(image, volume, ["noatime", "nodiratime", "noatime"]))

    assert {"noatime", "nodiratime"} <= vol_flags(agent, container_id)
    (mount,) = status(agent, container_id).status.mounts
    assert list(mount.mount_options) == ["noatime", "nodiratime"]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["bind"], "'bind'"),
        (["rshared"], "propagation"),
        (["ro"], "readonly"),
        (["size=10m"], "'size=10m'"),
        (["noexec", "frobnicate"], "'frobnicate'"),
        (["exec"], "host mount's flag"),
        (["noatime", "relatime"], "noatime and relatime"),
    ],
)
def test_a_bad_mount_option_is_invalid_and_leaves_nothing(
    agent: Agent, image: str, volume: Path, options: list[str], named: str
) -> None:
    pod = Pod(agent)

    assert_rpc_error(
        lambda: pod.create(with_options(image, volume, options)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "config.mounts[0].mount_options",
        named,
    )

    assert_nothing_left(agent, pod)
