"""ImageService through the CRI client, against Debian's docker-registry on loopback."""

from __future__ import annotations

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.registry_proxy import FaultyProxy
from tests.waiting import wait_until


def pull(agent: Agent, name: str, **auth: str) -> str:
    request = pb.PullImageRequest(image=pb.ImageSpec(image=name), auth=pb.AuthConfig(**auth))
    return str(agent.images.PullImage(request).image_ref)


def status(agent: Agent, name: str, verbose: bool = False) -> Any:
    request = pb.ImageStatusRequest(image=pb.ImageSpec(image=name), verbose=verbose)
    return agent.images.ImageStatus(request)


def listed(agent: Agent, name: str = "") -> list[Any]:
    request = pb.ListImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image=name)))
    return list(agent.images.ListImages(request).images)


def remove(agent: Agent, name: str) -> None:
    agent.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=name)))


def stored_files(agent: Agent) -> list[str]:
    """Everything in the blob and layer stores, temporary entries included."""
    found = []
    for directory in (
        agent.root_dir / "content" / "blobs" / "sha256",
        agent.root_dir / "content" / "ingest",
        agent.root_dir / "layers",
    ):
        if directory.is_dir():
            found += [str(entry) for entry in directory.iterdir()]
    return found


def lower_dirs(agent: Agent, name: str) -> list[Path]:
    info = json.loads(status(agent, name, verbose=True).info["info"])
    return [Path(d) for d in info["lowerDirs"]]


def test_a_pull_by_tag_is_listed_and_found_by_every_name(
    agent: Agent, registry: LocalRegistry
) -> None:
    name = f"{registry.address}/moorage-test/single:latest"

    image_id = pull(agent, name)

    image = status(agent, name).image
    assert image.id == image_id and image_id.startswith("sha256:")
    assert list(image.repo_tags) == [name]
    [repo_digest] = image.repo_digests
    assert repo_digest.startswith(f"{registry.address}/moorage-test/single@sha256:")
    assert image.size > 0
    for other in (image_id, image_id.removeprefix("sha256:"), repo_digest):
        assert status(agent, other).image.id == image_id
    assert [i.id for i in listed(agent)] == [image_id]
    assert [i.id for i in listed(agent, name)] == [image_id]
    assert image.spec.image_ref == repo_digest
    assert [i.spec.image_ref for i in listed(agent)] == [repo_digest]


def test_a_name_without_a_tag_means_latest(agent: Agent, registry: LocalRegistry) -> None:
    pull(agent, f"{registry.address}/moorage-test/single")

    assert list(
        status(agent, f"{registry.address}/moorage-test/single:latest").image.repo_tags
    ) == [f"{registry.address}/moorage-test/single:latest"]


def test_a_pull_by_digest_records_the_digest_and_no_tag(
    agent: Agent, registry: LocalRegistry
) -> None:
    tagged = f"{registry.address}/moorage-test/single:latest"
    digest = status_after_pull(agent, tagged).repo_digests[0].split("@")[1]
    remove(agent, tagged)
    by_digest = f"{registry.address}/moorage-test/single@{digest}"

    pull(agent, by_digest)

    image = status(agent, by_digest).image
    assert list(image.repo_digests) == [by_digest]
    assert list(image.repo_tags) == []


def status_after_pull(agent: Agent, name: str) -> Any:
    pull(agent, name)
    return status(agent, name).image


def test_one_image_under_two_names_has_one_id_and_both_names(
    agent: Agent, registry: LocalRegistry
) -> None:
    first = pull(agent, f"{registry.address}/moorage-test/single:latest")
    second = pull(agent, f"{registry.address}/moorage-test/alias:v1")

    assert first == second
    [image] = listed(agent)
    assert set(image.repo_tags) == {
        f"{registry.address}/moorage-test/single:latest",
        f"{registry.address}/moorage-test/alias:v1",
    }


def test_the_user_of_the_image_config_is_reported_as_uid(
    agent: Agent, registry: LocalRegistry
) -> None:
    name = f"{registry.address}/moorage-test/user:latest"
    pull(agent, name)

    image = status(agent, name).image
    assert image.uid.value == 1000
    assert image.username == ""


def test_a_multi_arch_index_gives_the_linux_amd64_image(
    agent: Agent, registry: LocalRegistry
) -> None:
    name = f"{registry.address}/moorage-test/multiarch:latest"
    pull(agent, name)

    info = json.loads(status(agent, name, verbose=True).info["info"])
    assert info["imageSpec"]["architecture"] == "amd64"
    assert any(
        (d / "arch").is_file() and (d / "arch").read_text().strip() == "amd64"
        for d in lower_dirs(agent, name)
    )


@pytest.mark.parametrize("image", ["multi", "zstd", "plain"])
def test_layers_are_unpacked_with_whiteouts_in_overlay_form(
    agent: Agent, registry: LocalRegistry, image: str
) -> None:
    name = f"{registry.address}/moorage-test/{image}:latest"
    pull(agent, name)

    dirs = lower_dirs(agent, name)
    assert any((d / "bin" / "busybox").is_file() for d in dirs)
    if image == "multi":
        top = dirs[0]
        whiteout = (top / "data" / "a.txt").lstat()
        assert (whiteout.st_mode & 0o170000, whiteout.st_rdev) == (0o020000, 0)
        assert os.getxattr(top / "data" / "dir", "trusted.overlay.opaque") == b"y"


def test_basic_auth_with_good_credentials_pulls_and_bad_ones_are_refused(
    agent: Agent, auth_registry: LocalRegistry
) -> None:
    name = f"{auth_registry.address}/moorage-test/private:latest"
    user, password = auth_registry.username, auth_registry.password

    assert_rpc_error(lambda: pull(agent, name), grpc.StatusCode.UNAUTHENTICATED, name)
    assert_rpc_error(
        lambda: pull(agent, name, username=user, password="wrong"),
        grpc.StatusCode.UNAUTHENTICATED,
        "401",
    )
    assert stored_files(agent) == []

    assert pull(agent, name, username=user, password=password).startswith("sha256:")
    remove(agent, name)
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert pull(agent, name, auth=encoded).startswith("sha256:")


def test_mirrors_are_tried_first_then_the_location_and_blocked_registries_refused(
    agent: Agent, registry: LocalRegistry
) -> None:
    proxy = FaultyProxy(registry.address)
    try:
        agent.registries_conf.write_text(
            "[[registry]]\n"
            'prefix = "mirrored.test/moorage-test"\n'
            f'location = "{registry.address}/moorage-test"\n'
            "[[registry.mirror]]\n"
            'location = "127.0.0.1:9/moorage-test"\n'
            "[[registry.mirror]]\n"
            f'location = "{proxy.address}/moorage-test"\n'
            "[[registry]]\n"
            'location = "blocked.test"\n'
            "blocked = true\n"
        )
        pull(agent, "mirrored.test/moorage-test/single:latest")
        assert sum(proxy.faults.blob_gets.values()) > 0

        proxy.stop()
        remove(agent, "mirrored.test/moorage-test/single:latest")
        pull(agent, "mirrored.test/moorage-test/single:latest")
        assert status(agent, "mirrored.test/moorage-test/single:latest").image.id

        assert_rpc_error(
            lambda: pull(agent, "blocked.test/x/y:1"), grpc.StatusCode.PERMISSION_DENIED, "blocked"
        )
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        # Transient: the registry may answer the next attempt, so kubelet should retry.
        ("drop", grpc.StatusCode.UNAVAILABLE),
        ("error", grpc.StatusCode.UNAVAILABLE),
        ("flip", grpc.StatusCode.UNKNOWN),
    ],
)
def test_a_faulty_registry_fails_the_pull_cleanly_and_a_retry_succeeds(
    agent_factory: AgentFactory, registry: LocalRegistry, fault: str, code: grpc.StatusCode
) -> None:
    agent = agent_factory(extra_images_config="pull_retries = 1\n")
    proxy = FaultyProxy(registry.address)
    try:
        name = f"{proxy.address}/moorage-test/multi:latest"
        proxy.faults.inject(fault, times=100)

        assert_rpc_error(lambda: pull(agent, name), code, name)

        assert listed(agent) == []
        assert stored_files(agent) == []
        proxy.faults.inject("", 0)
        assert pull(agent, name).startswith("sha256:")
    finally:
        proxy.stop()


def test_one_transient_failure_is_retried_within_the_pull(
    agent: Agent, registry: LocalRegistry
) -> None:
    proxy = FaultyProxy(registry.address)
    try:
        proxy.faults.inject("drop", times=1)
        assert pull(agent, f"{proxy.address}/moorage-test/single:latest").startswith("sha256:")
    finally:
        proxy.stop()


def test_twenty_concurrent_pulls_download_each_blob_once(
    agent: Agent, registry: LocalRegistry
) -> None:
    proxy = FaultyProxy(registry.address)
    try:
        name = f"{proxy.address}/moorage-test/multi:latest"
        with ThreadPoolExecutor(20) as pool:
            ids = set(pool.map(lambda _: pull(agent, name), range(20)))

        assert len(ids) == 1
        assert proxy.faults.blob_gets and set(proxy.faults.blob_gets.values()) == {1}
    finally:
        proxy.stop()


def test_removing_every_image_leaves_an_empty_store(agent: Agent, registry: LocalRegistry) -> None:
    for image in ("single", "multi", "user"):
        pull(agent, f"{registry.address}/moorage-test/{image}:latest")
    pull(agent, f"{registry.address}/moorage-test/alias:v1")
    assert stored_files(agent) != []

    for image in listed(agent):
        remove(agent, image.id)
    remove(agent, "sha256:" + "0" * 64)

    assert listed(agent) == []
    assert stored_files(agent) == []


def test_removing_one_image_keeps_the_layers_another_uses(
    agent: Agent, registry: LocalRegistry
) -> None:
    pull(agent, f"{registry.address}/moorage-test/single:latest")
    pull(agent, f"{registry.address}/moorage-test/user:latest")
    remove(agent, f"{registry.address}/moorage-test/single:latest")

    name = f"{registry.address}/moorage-test/user:latest"
    assert all(d.is_dir() for d in lower_dirs(agent, name))


def test_images_survive_a_kill9_and_restart(agent: Agent, registry: LocalRegistry) -> None:
    image_id = pull(agent, f"{registry.address}/moorage-test/multi:latest")

    agent.kill9()
    agent.start()

    assert [i.id for i in listed(agent)] == [image_id]
    assert all(d.is_dir() for d in lower_dirs(agent, image_id))


def test_a_pull_cut_by_a_crash_leaves_nothing_after_restart(
    agent: Agent, registry: LocalRegistry
) -> None:
    proxy = FaultyProxy(registry.address)
    try:
        proxy.faults.inject("hold", times=100)
        request = pb.PullImageRequest(
            image=pb.ImageSpec(image=f"{proxy.address}/moorage-test/multi:latest")
        )
        pending = agent.images.PullImage.future(request)
        assert wait_until(lambda: sum(proxy.faults.blob_gets.values()) > 0)

        agent.kill9()
        with pytest.raises(grpc.RpcError):
            pending.result()
        agent.start()

        assert listed(agent) == []
        assert stored_files(agent) == []
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("image", "cause"),
    [
        ("unknown-repo", "not found"),
        ("single:no-such-tag", "not found"),
    ],
)
def test_unknown_images_answer_not_found(
    agent: Agent, registry: LocalRegistry, image: str, cause: str
) -> None:
    name = f"{registry.address}/moorage-test/{image}"
    assert_rpc_error(lambda: pull(agent, name), grpc.StatusCode.NOT_FOUND, name)


def test_an_unreachable_registry_answers_unavailable(agent: Agent) -> None:
    assert_rpc_error(
        lambda: pull(agent, "127.0.0.1:9/moorage-test/single:latest"),
        grpc.StatusCode.UNAVAILABLE,
        "127.0.0.1:9",
    )


@pytest.mark.parametrize("name", ["", "UPPER/case:1", "bad name", "x@sha256:abc"])
def test_an_invalid_reference_is_invalid_argument(agent: Agent, name: str) -> None:
    assert_rpc_error(lambda: pull(agent, name), grpc.StatusCode.INVALID_ARGUMENT)


def test_status_of_an_unknown_image_is_empty_and_removing_it_succeeds(agent: Agent) -> None:
    assert not status(agent, "docker.io/library/never:pulled").HasField("image")
    remove(agent, "docker.io/library/never:pulled")


def test_a_short_name_is_tried_at_each_search_registry_in_turn(
    agent: Agent, registry: LocalRegistry
) -> None:
    agent.registries_conf.write_text(
        f'unqualified-search-registries = ["127.0.0.1:9", "{registry.address}"]\n'
    )

    pull(agent, "moorage-test/single")

    [image] = listed(agent)
    assert list(image.repo_tags) == [f"{registry.address}/moorage-test/single:latest"]


def test_a_held_pull_does_not_delay_other_calls(agent: Agent, registry: LocalRegistry) -> None:
    proxy = FaultyProxy(registry.address)
    try:
        proxy.faults.inject("hold", times=100)
        name = f"{proxy.address}/moorage-test/multi:latest"
        pending = agent.images.PullImage.future(pb.PullImageRequest(image=pb.ImageSpec(image=name)))
        assert wait_until(lambda: sum(proxy.faults.blob_gets.values()) > 0)

        agent.runtime.Version(pb.VersionRequest(), timeout=2)
        agent.images.ListImages(pb.ListImagesRequest(), timeout=2)
        agent.runtime.Status(pb.StatusRequest(), timeout=2)

        proxy.faults.released.set()
        assert pending.result(timeout=30).image_ref.startswith("sha256:")
    finally:
        proxy.stop()


def test_configured_images_are_reported_pinned(
    agent_factory: AgentFactory, registry: LocalRegistry
) -> None:
    pinned = f"{registry.address}/moorage-test/single:latest"
    agent = agent_factory(extra_images_config=f'pinned_images = ["{pinned}"]\n')
    pull(agent, pinned)
    pull(agent, f"{registry.address}/moorage-test/user:latest")

    assert {i.repo_tags[0]: i.pinned for i in listed(agent)} == {
        pinned: True,
        f"{registry.address}/moorage-test/user:latest": False,
    }
