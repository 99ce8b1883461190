from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument, NameReserved, NotFound
from runtime.pods.model import InfraProcess, Sandbox, SandboxFilter, SandboxState
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from tests.unit.builders import sandbox


@pytest.fixture
def store(db: StateDB) -> SandboxStore:
    return SandboxStore(db)


def _reopen(db: StateDB) -> tuple[StateDB, SandboxStore]:
    """A second StateDB on the same file, once the first has committed what it queued."""
    db.wait_written()
    reopened = StateDB(db.path)
    return reopened, SandboxStore(reopened)


# --- reserve / get / update / delete -------------------------------------------------------


def test_reserved_sandbox_is_found_by_full_id(store: SandboxStore) -> None:
    pod = sandbox("a1b2c3")
    store.reserve(pod)

    assert store.find("a1b2c3") == pod
    assert store.get("a1b2c3") == pod


def test_second_reservation_of_a_name_names_the_holder(store: SandboxStore) -> None:
    store.reserve(sandbox("first", uid="same"))

    with pytest.raises(NameReserved) as raised:
        store.reserve(sandbox("second", uid="same"))

    assert raised.value.holder_id == "first"
    assert raised.value.name == "web_default_same_0"
    assert "first" in str(raised.value)
    assert "web_default_same_0" in str(raised.value)
    assert store.find("second") is None


def test_name_reserved_by_a_creating_sandbox_is_refused(store: SandboxStore) -> None:
    store.reserve(sandbox("first", uid="same", state=SandboxState.CREATING))

    with pytest.raises(NameReserved) as raised:
        store.reserve(sandbox("second", uid="same"))

    assert raised.value.holder_id == "first"


def test_same_pod_with_a_new_attempt_is_a_new_name(store: SandboxStore) -> None:
    first = sandbox("first", uid="same")
    second = replace(
        sandbox("second", uid="same"),
        config=replace(first.config, metadata=replace(first.config.metadata, attempt=1)),
    )
    store.reserve(first)
    store.reserve(second)

    assert {s.id for s in store.select()} == {"first", "second"}


def test_name_is_free_again_after_delete(store: SandboxStore) -> None:
    store.reserve(sandbox("first", uid="same"))
    store.delete("first")

    store.reserve(sandbox("second", uid="same"))

    assert store.get("second").name == "web_default_same_0"


def test_deleted_sandbox_is_not_found(store: SandboxStore) -> None:
    store.reserve(sandbox("a1"))
    store.delete("a1")

    assert store.find("a1") is None
    assert store.all() == []
    with pytest.raises(NotFound):
        store.get("a1")


def test_deleting_an_unknown_sandbox_succeeds(store: SandboxStore) -> None:
    store.reserve(sandbox("a1"))

    store.delete("nope")
    store.delete("a1")
    store.delete("a1")

    assert store.all() == []


def test_update_returns_and_keeps_the_changed_sandbox(store: SandboxStore) -> None:
    store.reserve(sandbox("a1", state=SandboxState.CREATING))

    updated = store.update(
        "a1", lambda s: replace(s, state=SandboxState.READY, infra=InfraProcess(42, 7))
    )

    assert updated.state is SandboxState.READY
    assert updated.infra == InfraProcess(42, 7)
    assert store.get("a1") == updated


def test_update_passes_the_current_record_to_the_change(store: SandboxStore) -> None:
    store.reserve(sandbox("a1"))
    store.update("a1", lambda s: replace(s, shm_path="/first"))
    seen: list[str] = []

    def change(current: Sandbox) -> Sandbox:
        seen.append(current.shm_path)
        return replace(current, state=SandboxState.NOTREADY)

    store.update("a1", change)

    assert seen == ["/first"]


# --- visibility of half-built sandboxes ----------------------------------------------------


def test_creating_sandbox_is_invisible_to_find_and_select(store: SandboxStore) -> None:
    store.reserve(sandbox("building", state=SandboxState.CREATING))
    store.reserve(sandbox("ready"))

    assert store.find("building") is None
    assert store.find("build") is None
    assert [s.id for s in store.select()] == ["ready"]
    assert store.select(SandboxFilter(state=SandboxState.CREATING)) == []
    with pytest.raises(NotFound):
        store.get("building")


def test_creating_sandbox_is_listed_by_all_for_recovery(store: SandboxStore) -> None:
    store.reserve(sandbox("building", state=SandboxState.CREATING))
    store.reserve(sandbox("ready"))

    assert sorted(s.id for s in store.all()) == ["building", "ready"]


def test_sandbox_becomes_visible_once_ready(store: SandboxStore) -> None:
    store.reserve(sandbox("a1", state=SandboxState.CREATING))

    store.update("a1", lambda s: replace(s, state=SandboxState.READY))

    assert store.get("a1").state is SandboxState.READY


# --- lookups by prefix ---------------------------------------------------------------------


def test_unique_prefix_finds_the_sandbox(store: SandboxStore) -> None:
    store.reserve(sandbox("abc123"))
    store.reserve(sandbox("abd456"))

    assert store.get("abc").id == "abc123"
    assert store.get("abd4").id == "abd456"


def test_ambiguous_prefix_is_an_invalid_argument(store: SandboxStore) -> None:
    store.reserve(sandbox("abc123"))
    store.reserve(sandbox("abd456"))

    with pytest.raises(InvalidArgument, match=r"'ab'.*ambiguous"):
        store.find("ab")


def test_full_id_wins_over_longer_ids_sharing_it_as_prefix(store: SandboxStore) -> None:
    store.reserve(sandbox("abc"))
    store.reserve(sandbox("abcdef"))

    assert store.get("abc").id == "abc"


def test_prefix_ignores_creating_sandboxes_when_counting_matches(store: SandboxStore) -> None:
    store.reserve(sandbox("abc123"))
    store.reserve(sandbox("abd456", state=SandboxState.CREATING))

    assert store.get("ab").id == "abc123"


def test_unknown_id_is_not_found(store: SandboxStore) -> None:
    store.reserve(sandbox("abc123"))

    assert store.find("zzz") is None
    with pytest.raises(NotFound, match="zzz"):
        store.get("zzz")


@pytest.mark.parametrize("lookup", ["find", "get"])
def test_empty_id_is_an_invalid_argument(store: SandboxStore, lookup: str) -> None:
    store.reserve(sandbox("abc123"))

    with pytest.raises(InvalidArgument, match="empty"):
        getattr(store, lookup)("")


# --- select --------------------------------------------------------------------------------


def test_select_orders_by_creation_time(store: SandboxStore) -> None:
    store.reserve(sandbox("late", created_at_ns=300))
    store.reserve(sandbox("early", created_at_ns=100))
    store.reserve(sandbox("middle", created_at_ns=200))

    assert [s.id for s in store.select()] == ["early", "middle", "late"]


def test_select_applies_the_filter(store: SandboxStore) -> None:
    store.reserve(sandbox("a1", labels={"app": "web"}, created_at_ns=1))
    store.reserve(sandbox("a2", labels={"app": "db"}, created_at_ns=2))
    store.reserve(sandbox("b1", labels={"app": "web"}, state=SandboxState.NOTREADY))

    assert [s.id for s in store.select(SandboxFilter(label_selector={"app": "web"}))] == [
        "a1",
        "b1",
    ]
    assert [s.id for s in store.select(SandboxFilter(id_prefix="a"))] == ["a1", "a2"]
    assert [s.id for s in store.select(SandboxFilter(state=SandboxState.NOTREADY))] == ["b1"]


# --- persistence ---------------------------------------------------------------------------


def test_records_survive_reopening_the_database(store: SandboxStore, db: StateDB) -> None:
    ready = sandbox("ready", infra=InfraProcess(pid=1234, start_ticks=5678))
    building = sandbox("building", state=SandboxState.CREATING)
    store.reserve(ready)
    store.reserve(building)

    second, reopened = _reopen(db)
    try:
        assert reopened.get("ready") == ready
        assert sorted(reopened.all(), key=lambda s: s.id) == [building, ready]
    finally:
        second.close()


def test_updates_and_deletes_survive_reopening_the_database(
    store: SandboxStore, db: StateDB
) -> None:
    store.reserve(sandbox("kept"))
    store.reserve(sandbox("gone"))
    updated = store.update("kept", lambda s: replace(s, state=SandboxState.NOTREADY, pins={}))
    store.delete("gone")

    second, reopened = _reopen(db)
    try:
        assert reopened.all() == [updated]
    finally:
        second.close()


def test_name_reservation_survives_reopening_the_database(store: SandboxStore, db: StateDB) -> None:
    store.reserve(sandbox("holder", uid="same"))

    second, reopened = _reopen(db)
    try:
        with pytest.raises(NameReserved) as raised:
            reopened.reserve(sandbox("other", uid="same"))
        assert raised.value.holder_id == "holder"
    finally:
        second.close()


def test_state_db_creates_its_directory(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "a" / "b" / "state.db")
    try:
        assert (tmp_path / "a" / "b" / "state.db").is_file()
    finally:
        db.close()


def test_state_db_settings_are_kept_and_replaced(db_path: Path) -> None:
    db = StateDB(db_path)
    try:
        assert db.setting("pod_cidr") is None
        db.put_setting("pod_cidr", "10.0.0.0/24")
        db.put_setting("pod_cidr", "10.1.0.0/24")
    finally:
        db.close()

    reopened = StateDB(db_path)
    try:
        assert reopened.setting("pod_cidr") == "10.1.0.0/24"
    finally:
        reopened.close()


def test_state_db_put_replaces_the_record_of_an_id(db: StateDB) -> None:
    db.put("sandboxes", "a1", "name-a", "{1}")
    db.put("sandboxes", "a1", "name-a", "{2}")
    db.put("sandboxes", "b1", "name-b", "{3}")
    db.delete("sandboxes", "b1")

    assert db.records("sandboxes") == ["{2}"]
