"""Fixtures shared by the unit tests: a state database and runtime settings under tmp_path."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
async def no_loop_errors() -> AsyncIterator[None]:
    """Fails a test after which the event loop saw an exception nobody handled."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    gc.collect()  # "exception was never retrieved" is reported when a task is collected
    loop.set_exception_handler(None)
    assert seen == []
