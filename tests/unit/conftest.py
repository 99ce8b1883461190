"""Fixtures shared by the unit tests: a state database and runtime settings under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.settings import RuntimeSettings
from runtime.state.db import StateDB


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[StateDB]:
    state_db = StateDB(db_path)
    try:
        yield state_db
    finally:
        state_db.close()


@pytest.fixture
def settings(tmp_path: Path) -> RuntimeSettings:
    return RuntimeSettings(root_dir=tmp_path / "root", run_dir=tmp_path / "run")
