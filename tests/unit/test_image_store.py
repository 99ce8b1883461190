"""The image records: names that move between images, merges, and what survives a restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from runtime.images.content import ContentStore, LayerStore
from runtime.images.image_store import ImageStore
from runtime.images.model import Image, Layer, chain_ids, decode_image, encode_image
from runtime.state.db import StateDB


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def image(config: str, *, tags: tuple[str, ...] = (), digests: tuple[str, ...] = ()) -> Image:
    diff_ids = [digest_of(f"{config}-diff-{i}") for i in range(2)]
    chains = chain_ids(diff_ids)
    return Image(
        id=digest_of(config),
        manifest_digest=digest_of(f"{config}-manifest"),
        repo_tags=tags,
        repo_digests=digests,
        layers=tuple(
            Layer(
                digest_of(f"{config}-blob-{i}"),
                100 + i,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                d,
                c,
            )
            for i, (d, c) in enumerate(zip(diff_ids, chains, strict=True))
        ),
        size=1234,
        user="1000:1000",
        created_at_ns=42,
    )


def test_the_chain_id_of_the_first_layer_is_its_diff_id_and_then_hashes_the_stack() -> None:
    first, second = digest_of("a"), digest_of("b")
    expected = "sha256:" + hashlib.sha256(f"{first} {second}".encode()).hexdigest()
    assert chain_ids([first, second]) == [first, expected]


def test_an_image_record_round_trips_through_json() -> None:
    original = image(
        "c",
        tags=("docker.io/library/x:latest",),
        digests=("docker.io/library/x@sha256:" + "1" * 64,),
    )
    assert decode_image(encode_image(original)) == original


def test_names_are_found_and_survive_a_restart(db: StateDB, tmp_path: Path) -> None:
    store = ImageStore(db)
    stored = store.add(image("c", tags=("docker.io/library/x:1",)))
    db.close()

    reopened = ImageStore(StateDB(tmp_path / "state.db"))

    assert reopened.by_name("docker.io/library/x:1") == stored
    assert reopened.get(stored.id) == stored


def test_a_second_name_for_the_same_image_is_added_to_it(db: StateDB) -> None:
    store = ImageStore(db)
    store.add(image("c", tags=("docker.io/library/x:1",)))

    merged = store.add(image("c", tags=("docker.io/library/y:2",)))

    assert merged.repo_tags == ("docker.io/library/x:1", "docker.io/library/y:2")
    assert len(store.all()) == 1


def test_a_tag_that_moved_is_taken_from_the_old_image(db: StateDB) -> None:
    store = ImageStore(db)
    old = store.add(image("old", tags=("docker.io/library/x:latest",)))

    new = store.add(image("new", tags=("docker.io/library/x:latest",)))

    assert store.by_name("docker.io/library/x:latest") == new
    kept = store.get(old.id)
    assert kept is not None and kept.repo_tags == ()


def test_removing_an_image_frees_its_names(db: StateDB) -> None:
    store = ImageStore(db)
    stored = store.add(image("c", tags=("docker.io/library/x:1",)))

    assert store.remove(stored.id) == stored
    assert store.by_name("docker.io/library/x:1") is None
    assert store.remove(stored.id) is None
    assert ImageStore(db).all() == []


def test_content_enters_the_store_only_by_commit_and_leftover_downloads_are_cleared(
    tmp_path: Path,
) -> None:
    content = ContentStore(tmp_path / "content")
    data = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    partial = content.ingest_path()
    partial.write_bytes(data[:4])
    assert not content.has(digest)

    content.write(digest, data)

    assert content.read(digest) == data
    assert content.digests() == {digest}
    assert content.clear_ingest() == [partial.name]
    assert list(content.ingest.iterdir()) == []


def test_a_digest_that_is_not_sha256_hex_is_refused(tmp_path: Path) -> None:
    content = ContentStore(tmp_path / "content")
    with pytest.raises(ValueError, match="not a sha256 digest"):
        content.path("sha256:../../etc/passwd")


def test_layers_are_committed_once_and_unfinished_ones_are_cleared(tmp_path: Path) -> None:
    layers = LayerStore(tmp_path / "layers")
    chain = digest_of("chain")
    first, second = layers.staging_dir(), layers.staging_dir()
    (first / "file").write_text("first")
    (second / "file").write_text("second")
    unfinished = layers.staging_dir()

    layers.commit(first, chain)
    layers.commit(second, chain)

    assert (layers.path(chain) / "file").read_text() == "first"
    assert not second.exists()
    assert layers.clear_staging() == [unfinished.name]
    assert layers.chain_ids() == {chain}
