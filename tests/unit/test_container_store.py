"""Container rows: every field survives a reopen, names are reserved per pod and attempt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from runtime.containers.model import (
    ContainerFilter,
    ContainerState,
)
from runtime.errors import InvalidArgument, NameReserved, NotFound
from runtime.state.container_store import ContainerStore, reserved_name
from runtime.state.db import StateDB
from tests.unit.builders import container


def test_every_field_survives_a_reopen(db: StateDB, tmp_path: Path) -> None:
    original = container("c1")
    ContainerStore(db).reserve(original, "app_pod_1")
    db.close()

    reopened = ContainerStore(StateDB(tmp_path / "state.db"))

    assert reopened.get("c1") == original


def test_a_reserved_name_names_its_holder(db: StateDB) -> None:
    store = ContainerStore(db)
    store.reserve(container("c1"), "app_pod_1")

    with pytest.raises(NameReserved, match="c1"):
        store.reserve(container("c2"), "app_pod_1")


def test_the_name_is_free_again_after_delete(db: StateDB) -> None:
    store = ContainerStore(db)
    store.reserve(container("c1"), "app_pod_1")
    store.delete("c1")

    store.reserve(container("c2"), "app_pod_1")

    assert store.get("c2").id == "c2"


def test_reserved_name_carries_pod_and_attempt() -> None:
    assert reserved_name(container("c1"), "web_ns_uid_0") == "app_web_ns_uid_0_1"


def test_lookup_by_prefix_and_errors(db: StateDB) -> None:
    store = ContainerStore(db)
    store.reserve(container("abc1"), "n1")
    store.reserve(container("abc2", name="other"), "n2")

    assert store.get("abc1").id == "abc1"
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.find("abc")
    with pytest.raises(NotFound):
        store.get("zzz")
    with pytest.raises(InvalidArgument):
        store.find("")


def test_creating_rows_are_invisible_but_kept_for_recovery(db: StateDB) -> None:
    store = ContainerStore(db)
    store.reserve(replace(container("c1"), state=ContainerState.CREATING), "n1")

    assert store.find("c1") is None
    assert store.select() == []
    assert [c.id for c in store.in_sandbox("pod1")] == ["c1"]


def test_filter_by_state_pod_prefix_and_labels(db: StateDB) -> None:
    store = ContainerStore(db)
    store.reserve(container("c1"), "n1")
    store.reserve(replace(container("c2", sandbox_id="pod2"), state=ContainerState.EXITED), "n2")

    def ids(**fields: object) -> list[str]:
        return [c.id for c in store.select(ContainerFilter(**fields))]  # type: ignore[arg-type]

    assert ids(state=ContainerState.EXITED) == ["c2"]
    assert ids(sandbox_id_prefix="pod1") == ["c1"]
    assert ids(label_selector={"tier": "web"}) == ["c1", "c2"]
    assert ids(label_selector={"tier": "db"}) == []
