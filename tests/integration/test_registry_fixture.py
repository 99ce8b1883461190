"""The registry fixtures serve what the pull tests expect, pushed byte for byte from the layouts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.images_build import MEDIA_INDEX, REF_NAME
from tests.registry_fixture import MANIFEST_ACCEPT, LocalRegistry, manifest_digest, push


def _layout_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    (tagged,) = [m for m in index["manifests"] if m["annotations"][REF_NAME] == "latest"]
    return str(tagged["digest"])


def test_catalog_lists_every_pushed_image(
    registry: LocalRegistry, test_images: dict[str, Path]
) -> None:
    response = httpx.get(f"{registry.url}/v2/_catalog")

    response.raise_for_status()
    expected = {f"moorage-test/{name}" for name in test_images} | {"moorage-test/alias"}
    # Subset: other tests in the session may push repositories of their own.
    assert expected <= set(response.json()["repositories"])


def test_alias_tag_is_the_single_image(registry: LocalRegistry) -> None:
    alias = manifest_digest(registry, "moorage-test/alias", "v1")

    assert alias == manifest_digest(registry, "moorage-test/single", "latest")


def test_auth_registry_wants_credentials(auth_registry: LocalRegistry) -> None:
    url = f"{auth_registry.url}/v2/moorage-test/private/manifests/latest"

    anonymous = httpx.get(url, headers={"Accept": MANIFEST_ACCEPT})
    authenticated = httpx.get(url, headers={"Accept": MANIFEST_ACCEPT}, auth=auth_registry.auth)

    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert authenticated.status_code == 200


def test_multiarch_is_an_index_of_two_platforms(registry: LocalRegistry) -> None:
    response = httpx.get(
        f"{registry.url}/v2/moorage-test/multiarch/manifests/latest",
        headers={"Accept": MANIFEST_ACCEPT},
    )

    response.raise_for_status()
    index = response.json()
    assert response.headers["Content-Type"] == MEDIA_INDEX
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}


def test_push_returns_the_registry_digest_of_the_layout_manifest(
    scratch_registry: LocalRegistry, test_images: dict[str, Path]
) -> None:
    for name in ("plain", "multiarch", "zstd"):
        if name not in test_images:
            continue
        layout = test_images[name]

        pushed = push(scratch_registry, layout, f"scratch/{name}", "v2")

        assert pushed == manifest_digest(scratch_registry, f"scratch/{name}", "v2")
        assert pushed == _layout_digest(layout)
