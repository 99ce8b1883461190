"""Layers from strangers: crafted images pushed straight through the registry API must fail
the pull with a clear error and leave nothing behind, inside the store or outside it."""

from __future__ import annotations

import secrets
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.pods import assert_rpc_error
from tests.e2e.test_images import listed, pull, stored_files
from tests.registry_fixture import LocalRegistry
from tests.registry_push import add_file, add_link, push_image, tar_of


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory the tars aim at; it must stay empty."""
    target = Path(f"/tmp/mre-outside-{secrets.token_hex(4)}")
    target.mkdir()
    yield target
    for entry in target.iterdir():
        entry.unlink()
    target.rmdir()


def malicious_layers(outside: Path) -> dict[str, Callable[[tarfile.TarFile], None]]:
    def absolute(archive: tarfile.TarFile) -> None:
        add_file(archive, f"{outside}/evil")

    def dotdot(archive: tarfile.TarFile) -> None:
        add_file(archive, "../" * 20 + f"{str(outside).lstrip('/')}/evil")

    def through_symlink(archive: tarfile.TarFile) -> None:
        add_link(archive, "escape", str(outside))
        add_file(archive, "escape/evil")

    def through_relative_symlink(archive: tarfile.TarFile) -> None:
        add_link(archive, "up", "../" * 20 + str(outside).lstrip("/"))
        add_file(archive, "up/evil")

    def hardlink_outside(archive: tarfile.TarFile) -> None:
        add_link(archive, "passwd", "/etc/passwd", hard=True)

    return {
        "absolute": absolute,
        "dotdot": dotdot,
        "through_symlink": through_symlink,
        "through_relative_symlink": through_relative_symlink,
        "hardlink_outside": hardlink_outside,
    }


@pytest.mark.parametrize(
    "kind",
    ["absolute", "dotdot", "through_symlink", "through_relative_symlink", "hardlink_outside"],
)
def test_a_layer_reaching_outside_fails_the_pull_and_writes_nothing(
    agent: Agent, registry: LocalRegistry, outside: Path, kind: str
) -> None:
    layer = tar_of(malicious_layers(outside)[kind])
    repository = f"moorage-test/evil-{kind.replace('_', '-')}-{secrets.token_hex(3)}"
    push_image(registry.address, repository, "latest", [layer])
    name = f"{registry.address}/{repository}:latest"

    message = assert_rpc_error(lambda: pull(agent, name), grpc.StatusCode.UNKNOWN, name)

    assert "layer" in message
    assert list(outside.iterdir()) == []
    assert listed(agent) == []
    assert stored_files(agent) == []


def test_a_decompression_bomb_beyond_the_cap_fails_the_pull(
    agent_factory: AgentFactory, registry: LocalRegistry
) -> None:
    agent = agent_factory(extra_images_config=f"max_layer_bytes = {1024 * 1024}\n")
    layer = tar_of(lambda archive: add_file(archive, "zeros", bytes(8 * 1024 * 1024)))
    repository = f"moorage-test/bomb-{secrets.token_hex(3)}"
    push_image(registry.address, repository, "latest", [layer])
    name = f"{registry.address}/{repository}:latest"

    assert_rpc_error(lambda: pull(agent, name), grpc.StatusCode.UNKNOWN, "cap")

    assert stored_files(agent) == []


def test_a_config_listing_fewer_layers_than_the_manifest_is_refused(
    agent: Agent, registry: LocalRegistry
) -> None:
    repository = f"moorage-test/liar-{secrets.token_hex(3)}"
    layer = tar_of(lambda archive: add_file(archive, "f"))
    push_image(registry.address, repository, "latest", [layer], diff_ids=[])
    name = f"{registry.address}/{repository}:latest"

    assert_rpc_error(lambda: pull(agent, name), grpc.StatusCode.UNKNOWN, "1 layers, the config 0")

    assert stored_files(agent) == []


def test_a_layer_whose_content_differs_from_its_diff_id_is_refused(
    agent: Agent, registry: LocalRegistry
) -> None:
    """The unpacked layer is stored by chain id; content that is not what the config claims
    would otherwise be handed to every later image whose chain has that id."""
    repository = f"moorage-test/diff-liar-{secrets.token_hex(3)}"
    layer = tar_of(lambda archive: add_file(archive, "f"))
    claimed = "sha256:" + "ab" * 32
    push_image(registry.address, repository, "latest", [layer], diff_ids=[claimed])
    name = f"{registry.address}/{repository}:latest"

    message = assert_rpc_error(lambda: pull(agent, name), grpc.StatusCode.UNKNOWN, claimed)

    assert "the image config says" in message
    assert listed(agent) == []
    assert stored_files(agent) == []
