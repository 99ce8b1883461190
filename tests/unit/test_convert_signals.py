"""Stop signals across the CRI's enum rename (SIGTERM became SIGNAL_SIGTERM, numbers kept): the
agent stores the image spelling, and a state.db an agent wrote before the rename still loads
and reports the same signal."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import pytest

from cri.convert.containers import container_config_from_proto, container_status_to_proto
from cri.convert.signals import stop_signal_from_proto, stop_signal_to_proto
from cri.proto import api_pb2 as pb
from runtime.containers.build import signal_number
from runtime.state.container_store import ContainerStore
from runtime.state.db import StateDB
from tests.unit.builders import container


@pytest.mark.parametrize("value", pb.Signal.values())
def test_every_enum_value_survives_the_stored_spelling(value: pb.Signal.ValueType) -> None:
    assert stop_signal_to_proto(stop_signal_from_proto(value)) == value


@pytest.mark.parametrize(
    ("value", "stored", "number"),
    [
        (pb.SIGNAL_SIGTERM, "SIGTERM", signal.SIGTERM),
        (pb.SIGNAL_SIGKILL, "SIGKILL", signal.SIGKILL),
        (pb.SIGNAL_SIGRTMINPLUS3, "SIGRTMIN+3", signal.SIGRTMIN + 3),
        (pb.SIGNAL_SIGRTMAXMINUS1, "SIGRTMAX-1", signal.SIGRTMAX - 1),
        (pb.SIGNAL_SIGRTMAX, "SIGRTMAX", signal.SIGRTMAX),
    ],
)
def test_a_requested_signal_is_stored_as_images_spell_it_and_sent_as_that_signal(
    value: pb.Signal.ValueType, stored: str, number: int
) -> None:
    assert stop_signal_from_proto(value) == stored
    assert signal_number(stored) == number


def test_the_runtime_default_is_stored_as_no_signal() -> None:
    assert stop_signal_from_proto(pb.SIGNAL_RUNTIME_DEFAULT) == ""
    assert stop_signal_to_proto("") == pb.SIGNAL_RUNTIME_DEFAULT


@pytest.mark.parametrize(
    ("image_signal", "value"),
    [
        ("SIGINT", pb.SIGNAL_SIGINT),
        ("int", pb.SIGNAL_SIGINT),
        ("2", pb.SIGNAL_SIGINT),
        ("SIGRTMIN+3", pb.SIGNAL_SIGRTMINPLUS3),
        ("SIGNOTREAL", pb.SIGNAL_RUNTIME_DEFAULT),
        ("999", pb.SIGNAL_RUNTIME_DEFAULT),
    ],
)
def test_an_image_stop_signal_is_reported_as_its_enum_value(
    image_signal: str, value: pb.Signal.ValueType
) -> None:
    assert stop_signal_to_proto(image_signal) == value


@pytest.mark.parametrize(
    ("written", "value", "number"),
    [
        ("SIGQUIT", pb.SIGNAL_SIGQUIT, signal.SIGQUIT),
        ("SIGRTMINPLUS3", pb.SIGNAL_SIGRTMINPLUS3, signal.SIGRTMIN + 3),
        ("SIGRTMAXMINUS2", pb.SIGNAL_SIGRTMAXMINUS2, signal.SIGRTMAX - 2),
    ],
)
def test_a_state_db_written_before_the_rename_loads_with_the_same_signal(
    tmp_path: Path, written: str, value: pb.Signal.ValueType, number: int
) -> None:
    # Agents before the rename stored pb.Signal.Name() of the old enum: "SIGQUIT",
    # "SIGRTMINPLUS3". The row format is unchanged, so this is such a row.
    old = container("c1")
    old = replace(old, stop_signal=written, config=replace(old.config, stop_signal=written))
    db = StateDB(tmp_path / "state.db")
    ContainerStore(db).reserve(old, "app_pod_1")
    db.close()

    loaded = ContainerStore(StateDB(tmp_path / "state.db")).get("c1")

    assert container_status_to_proto(loaded).stop_signal == value
    assert signal_number(loaded.stop_signal) == number


def test_an_env_value_that_is_not_utf8_keeps_its_bytes_through_state_db(tmp_path: Path) -> None:
    request = pb.CreateContainerRequest(
        pod_sandbox_id="pod1",
        config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="app"),
            image=pb.ImageSpec(image="busybox"),
            envs=[
                pb.KeyValue(key="RAW", value=b"a\xff\xfeb"),
                pb.KeyValue(key="OK", value=b"\xc3\xa9"),
            ],
        ),
    )
    config = container_config_from_proto(request)
    db = StateDB(tmp_path / "state.db")
    ContainerStore(db).reserve(replace(container("c1"), config=config), "app_pod_1")
    db.close()

    loaded = ContainerStore(StateDB(tmp_path / "state.db")).get("c1").config.envs

    assert loaded["OK"] == "é"
    assert loaded["RAW"].encode(errors="surrogateescape") == b"a\xff\xfeb"
