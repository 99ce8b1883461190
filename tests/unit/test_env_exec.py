"""The spec of a container whose env is not all UTF-8: started through env-exec, and only then."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runtime.containers.model import ContainerConfig
from runtime.errors import FailedPrecondition
from runtime.oci.env_exec import (
    ENV_EXEC_IN_CONTAINER,
    deliver_raw_env,
    raw_env_entry,
    with_command,
)
from tests.unit.test_oci_spec import spec

# What cri/convert/containers.py makes of the value bytes b"a\xff\xfeb".
RAW_VALUE = b"a\xff\xfeb".decode(errors="surrogateescape")


@pytest.fixture
def env_exec(tmp_path: Path) -> Path:
    helper = tmp_path / "env-exec"
    helper.write_bytes(b"\x7fELF")
    return helper


def raw_spec(envs: dict[str, str]) -> dict[str, Any]:
    return spec(ContainerConfig(name="app", image="img", command=["sleep", "60"], envs=envs))


def test_a_utf8_env_leaves_the_spec_as_it_was_even_without_the_helper(tmp_path: Path) -> None:
    built = raw_spec({"PLAIN": "héllo"})
    before = copy.deepcopy(built)

    deliver_raw_env(built, tmp_path / "absent")

    assert built == before


def test_non_utf8_entries_go_to_env_exec_as_hex_and_the_rest_stays_in_env(
    env_exec: Path,
) -> None:
    built = raw_spec({"RAW": RAW_VALUE, "PLAIN": "ok"})
    mounts_before = list(built["mounts"])

    deliver_raw_env(built, env_exec)

    process = built["process"]
    assert process["args"] == [ENV_EXEC_IN_CONTAINER, b"RAW=a\xff\xfeb".hex(), "--", "sleep", "60"]
    assert "PLAIN=ok" in process["env"]
    assert not any(entry.startswith("RAW=") for entry in process["env"])
    # After the runtime's /dev tmpfs, which it would otherwise cover.
    assert built["mounts"] == [
        *mounts_before,
        {
            "destination": ENV_EXEC_IN_CONTAINER,
            "type": "bind",
            "source": str(env_exec),
            "options": ["bind", "ro", "nosuid", "nodev"],
        },
    ]
    json.dumps(built).encode("ascii")


def test_a_missing_helper_is_a_failed_precondition_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"absent.*hack/install"):
        deliver_raw_env(raw_spec({"RAW": RAW_VALUE}), tmp_path / "absent")


def test_only_surrogate_escaped_bytes_count_as_raw() -> None:
    assert raw_env_entry("A=héllo") is None
    assert raw_env_entry(f"A={RAW_VALUE}") == b"A=a\xff\xfeb"
    # A lone surrogate from an image's JSON stands for no byte: the runtime gets it as before.
    assert raw_env_entry("A=\ud800") is None


def test_an_exec_keeps_the_env_exec_prefix_and_replaces_the_command() -> None:
    args = [ENV_EXEC_IN_CONTAINER, "413dff", "--", "sleep", "60"]

    assert with_command(args, ["cat", "/x"]) == [ENV_EXEC_IN_CONTAINER, "413dff", "--", "cat", "/x"]
    assert with_command(["sleep", "60"], ["cat", "/x"]) == ["cat", "/x"]
