from __future__ import annotations

import pytest

from runtime.images.reference import InvalidReference, has_domain, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("user/img", "docker.io/user/img:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
        ("localhost/a", "localhost/a:latest"),
        ("127.0.0.1:5000/pause:3.9", "127.0.0.1:5000/pause:3.9"),
        (f"quay.io/x/y@{DIGEST}", f"quay.io/x/y@{DIGEST}"),
        (f"name:tag@{DIGEST}", f"docker.io/library/name:tag@{DIGEST}"),
        ("registry.k8s.io/pause", "registry.k8s.io/pause:latest"),
        ("a__b/c-d--e.f_g", "docker.io/a__b/c-d--e.f_g:latest"),
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
    ],
)
def test_references_are_normalized_like_docker(text: str, normalized: str) -> None:
    assert str(parse_reference(text)) == normalized


def test_parts_and_names() -> None:
    ref = parse_reference(f"quay.io/x/y:v1@{DIGEST}")

    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("quay.io", "x/y", "v1", DIGEST)
    assert ref.repository == "quay.io/x/y"
    assert ref.name_with_tag == "quay.io/x/y:v1"
    assert ref.name_with_digest == f"quay.io/x/y@{DIGEST}"


def test_a_digest_only_reference_has_no_tag() -> None:
    ref = parse_reference(f"busybox@{DIGEST}")

    assert ref.tag == ""
    assert ref.name_with_tag == ""
    assert ref.name_with_digest == f"docker.io/library/busybox@{DIGEST}"


def test_a_tag_only_reference_has_no_digest_name() -> None:
    assert parse_reference("busybox").name_with_digest == ""


def test_the_default_domain_can_be_changed_and_gets_no_library_prefix() -> None:
    assert str(parse_reference("pause", default_domain="registry.local")) == (
        "registry.local/pause:latest"
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("docker.io/User/img", "lowercase"),
        ("busybox@sha256:abc", "invalid digest"),
        ("busybox@sha256:" + "AB" * 32, "invalid digest"),
        ("busybox@sha512:" + "ab" * 64, "unsupported digest algorithm 'sha512'"),
        ("busybox@md5", "invalid digest"),
        ("busybox:.bad", "invalid tag"),
        ("busybox:" + "t" * 129, "invalid tag"),
        ("a//b", "invalid repository"),
        ("-a/b", "invalid repository"),
        ("a/b/", "invalid repository"),
        ("bad_host.com/x", "invalid registry"),
        ("example.com:port/x", "invalid registry"),
        ("ab" * 32, "image id"),
        (DIGEST, "image id"),
        ("x/" + "a" * 260, "longer than 255"),
    ],
)
def test_invalid_references_are_rejected_clearly(text: str, complaint: str) -> None:
    with pytest.raises(InvalidReference, match=complaint):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", False),
        ("user/img", False),
        ("quay.io/x", True),
        ("localhost/x", True),
        ("localhost", False),
        ("host:5000/x", True),
    ],
)
def test_has_domain(text: str, expected: bool) -> None:
    assert has_domain(text) is expected
