from __future__ import annotations

from pathlib import Path

import pytest

from runtime.images.registries_conf import (
    BlockedRegistry,
    Endpoint,
    RegistriesConfError,
    RegistriesConfig,
    RegistryEntry,
    load_registries_conf,
    pull_sources,
)

CONF = """
unqualified-search-registries = ["docker.io", "quay.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror-a.local:5000"
insecure = true

[[registry.mirror]]
location = "mirror-b.local/hub/"

[[registry]]
prefix = "docker.io/library"
location = "mirror.local/lib"
mirror-by-digest-only = false

[[registry]]
location = "quay.io"
blocked = true

[[registry]]
prefix = "*.corp.example"
insecure = true

[[registry]]
prefix = "*.mirrored.example"
location = "central.example/all"
"""


@pytest.fixture
def config(tmp_path: Path) -> RegistriesConfig:
    path = tmp_path / "registries.conf"
    path.write_text(CONF)
    return load_registries_conf(path)


def test_parsing(config: RegistriesConfig) -> None:
    assert config.unqualified_search == ("docker.io", "quay.io")
    assert config.registries[0] == RegistryEntry(
        prefix="docker.io",
        location="docker.io",
        insecure=False,
        blocked=False,
        mirrors=(Endpoint("mirror-a.local:5000", True), Endpoint("mirror-b.local/hub", False)),
    )
    assert config.registries[2].prefix == "quay.io"  # defaults to the location
    assert config.registries[2].blocked


def test_a_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    assert load_registries_conf(tmp_path / "none.conf") == RegistriesConfig((), ())


def test_the_longest_prefix_wins_and_rewrites_the_path(config: RegistriesConfig) -> None:
    assert pull_sources(config, "docker.io/library/busybox") == [
        (Endpoint("mirror.local"), "lib/busybox")
    ]


def test_mirrors_come_first_in_order_then_the_location(config: RegistriesConfig) -> None:
    assert pull_sources(config, "docker.io/user/img") == [
        (Endpoint("mirror-a.local:5000", insecure=True), "user/img"),
        (Endpoint("mirror-b.local"), "hub/user/img"),
        (Endpoint("registry-1.docker.io"), "user/img"),
    ]


def test_prefixes_match_whole_components_only(config: RegistriesConfig) -> None:
    assert pull_sources(config, "docker.io/libraryx/img")[-1] == (
        Endpoint("registry-1.docker.io"),
        "libraryx/img",
    )
    assert pull_sources(config, "quay.iox/a") == [(Endpoint("quay.iox"), "a")]


def test_without_a_match_the_repository_is_used_as_is(config: RegistriesConfig) -> None:
    assert pull_sources(config, "ghcr.io/o/r") == [(Endpoint("ghcr.io"), "o/r")]
    assert pull_sources(RegistriesConfig(), "docker.io/library/x") == [
        (Endpoint("registry-1.docker.io"), "library/x")
    ]


def test_a_blocked_registry_is_refused_by_name(config: RegistriesConfig) -> None:
    with pytest.raises(BlockedRegistry, match=r"quay\.io"):
        pull_sources(config, "quay.io/x/y")


def test_a_wildcard_without_location_keeps_the_name_but_applies_settings(
    config: RegistriesConfig,
) -> None:
    assert pull_sources(config, "reg.corp.example/team/app") == [
        (Endpoint("reg.corp.example", insecure=True), "team/app")
    ]
    assert pull_sources(config, "a.b.corp.example:5000/app") == [
        (Endpoint("a.b.corp.example:5000"), "app")
    ]
    assert pull_sources(config, "corp.example/app") == [(Endpoint("corp.example"), "app")]


def test_a_wildcard_with_location_rewrites_the_host(config: RegistriesConfig) -> None:
    assert pull_sources(config, "x.mirrored.example/app") == [
        (Endpoint("central.example"), "all/app")
    ]


def test_an_exact_prefix_beats_a_wildcard_of_the_same_length(tmp_path: Path) -> None:
    path = tmp_path / "registries.conf"
    path.write_text(
        '[[registry]]\nprefix = "*.example.com"\nblocked = true\n'
        '[[registry]]\nlocation = "ok.example.com"\n'
    )
    config = load_registries_conf(path)

    assert pull_sources(config, "ok.example.com/a") == [(Endpoint("ok.example.com"), "a")]
    with pytest.raises(BlockedRegistry, match=r"\*\.example\.com"):
        pull_sources(config, "no.example.com/a")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (
            "unqualified-search-registries = 'docker.io'",
            "unqualified-search-registries: expected an array",
        ),
        (
            "unqualified-search-registries = [1]",
            r"unqualified-search-registries\[0\]: expected a string",
        ),
        ("[[registry]]\nlocation = 5", r"registry\[0\]\.location: expected a string, got int"),
        (
            "[[registry]]\nlocation = 'a'\ninsecure = 'yes'",
            r"registry\[0\]\.insecure: expected a boolean",
        ),
        ("[[registry]]\nlocation = 'a'\nblocked = 1", r"registry\[0\]\.blocked"),
        ("[[registry]]\nlocation = 'a'\nmirror = 'b'", r"registry\[0\]\.mirror: expected an array"),
        (
            "[[registry]]\nlocation = 'a'\n[[registry.mirror]]\ninsecure = true",
            r"mirror\[0\]\.location is not set",
        ),
        (
            "[[registry]]\nlocation = 'a'\n[[registry.mirror]]\nlocation = 'b'\ninsecure = 'no'",
            r"registry\[0\]\.mirror\[0\]\.insecure: expected a boolean",
        ),
        ("[[registry]]\ninsecure = true", "neither location nor prefix"),
        ("[[registry]]\nprefix = 'a.com'", "wildcard prefix"),
        ("[[registry]]\nlocation = 'https://a.com'", "URI scheme"),
        ("[[registry]]\nlocation = 'a'\n[[registry]]\nlocation = 'a/'", "more than once"),
        ("[registries.search]\nregistries = []", "version 1"),
        ("registry = [", "not valid TOML"),
    ],
)
def test_bad_files_are_rejected_naming_the_key(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "registries.conf"
    path.write_text(text)

    with pytest.raises(RegistriesConfError, match=complaint):
        load_registries_conf(path)
