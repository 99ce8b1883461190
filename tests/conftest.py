"""The root gate for the whole suite, and session fixtures for image pulls: test image
layouts and local registries serving them, built and started at most once per run and only when
a test asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import root_gate
from tests.images_build import BUSYBOX, build_all
from tests.registry_fixture import (
    REPO_PREFIX,
    LocalRegistry,
    missing_binaries,
    push,
    push_test_images,
    start_registry,
)

# Enough layers and bytes to exercise streaming and progress, small enough for every run.
TEST_LARGE_BYTES = 20 * 1024 * 1024


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # By directory, so a new module there cannot forget the gate.
    for item in items:
        if root_gate.needs_root(item.path):
            item.add_marker(root_gate.MARKER)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture: they are what would need root.
    if item.get_closest_marker(root_gate.MARKER) is not None:
        root_gate.require_root()


@pytest.fixture(scope="session")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Image name -> OCI layout directory (tag "latest"); see tests.images_build for contents."""
    if not BUSYBOX.is_file():
        pytest.skip(f"needs {BUSYBOX} (busybox-static)")
    return build_all(tmp_path_factory.mktemp("images"), large_bytes=TEST_LARGE_BYTES)


def _started(auth: bool) -> LocalRegistry:
    if missing := missing_binaries():
        pytest.skip(f"needs {', '.join(missing)}")
    return start_registry(auth=auth)


@pytest.fixture(scope="session")
def registry(test_images: dict[str, Path]) -> Iterator[LocalRegistry]:
    """Plain-HTTP registry with every test image as moorage-test/<name>:latest and
    single also as moorage-test/alias:v1."""
    started = _started(auth=False)
    try:
        push_test_images(started, test_images)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def auth_registry(test_images: dict[str, Path]) -> Iterator[LocalRegistry]:
    """Basic-auth registry (credentials on the object), single as moorage-test/private:latest."""
    started = _started(auth=True)
    try:
        push(started, test_images["single"], f"{REPO_PREFIX}/private")
        yield started
    finally:
        started.stop()


@pytest.fixture
def scratch_registry() -> Iterator[LocalRegistry]:
    """An empty plain-HTTP registry of the test's own, for pushes the shared ones must not see."""
    started = _started(auth=False)
    try:
        yield started
    finally:
        started.stop()
