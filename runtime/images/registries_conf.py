"""containers-registries.conf(5), version 2: where a repository is really pulled from.

Only what pulling by a fully qualified name needs is interpreted: prefixes, locations, mirrors,
`insecure` and `blocked`. Short names are always normalised to docker.io before this is
consulted, so `unqualified-search-registries` is parsed but only reported.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Docker Hub's API is not served at the name images use.
_DOCKER_DOMAIN = "docker.io"
_DOCKER_API_HOST = "registry-1.docker.io"


class RegistriesConfError(ValueError):
    pass


class BlockedRegistry(Exception):
    pass


@dataclass(frozen=True)
class Endpoint:
    location: str  # host[:port], or host[:port]/path-prefix inside registries.conf
    insecure: bool = False


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool
    blocked: bool
    mirrors: tuple[Endpoint, ...]


@dataclass(frozen=True)
class RegistriesConfig:
    unqualified_search: tuple[str, ...] = ()
    registries: tuple[RegistryEntry, ...] = ()


def load_registries_conf(path: Path) -> RegistriesConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return RegistriesConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistriesConfError(f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistriesConfError(f"not valid TOML: {exc}") from None
    if isinstance(data.get("registries"), dict):
        raise RegistriesConfError("the version 1 format ([registries.*]) is not supported")
    search_key = "unqualified-search-registries"
    search = _typed(data, search_key, list, [], search_key)
    for i, item in enumerate(search):
        _expect(item, str, f"{search_key}[{i}]")
    tables = _typed(data, "registry", list, [], "registry")
    entries = tuple(_entry(table, f"registry[{i}]") for i, table in enumerate(tables))
    seen: set[str] = set()
    for entry in entries:
        if entry.prefix in seen:
            raise RegistriesConfError(f"prefix {entry.prefix!r} is configured more than once")
        seen.add(entry.prefix)
    return RegistriesConfig(unqualified_search=tuple(search), registries=entries)


def pull_sources(config: RegistriesConfig, repository: str) -> list[tuple[Endpoint, str]]:
    """The (endpoint, path on that endpoint) pairs to try for `repository`, in order."""
    best: RegistryEntry | None = None
    best_key = (-1, False)
    for entry in config.registries:
        # On a tie an exact host beats a wildcard that also covers it.
        key = (_match_length(entry.prefix, repository), not entry.prefix.startswith("*."))
        if key[0] >= 0 and key > best_key:
            best, best_key = entry, key
    if best is None:
        return [_split(repository, insecure=False)]
    if best.blocked:
        raise BlockedRegistry(f"registry {best.prefix} is blocked in registries.conf")
    rest = repository[best_key[0] :]
    sources = [_split(m.location + rest, insecure=m.insecure) for m in best.mirrors]
    # A wildcard entry without a location applies its settings but keeps the name as it is.
    primary = best.location + rest if best.location else repository
    sources.append(_split(primary, insecure=best.insecure))
    return sources


def _match_length(prefix: str, repository: str) -> int:
    """How much of `repository` the prefix covers, ending at a component boundary; -1 if none."""
    if prefix.startswith("*."):
        host = repository.partition("/")[0]
        return len(host) if host.endswith(prefix[1:]) else -1
    if repository == prefix:
        return len(prefix)
    if repository.startswith(prefix) and repository[len(prefix)] == "/":
        return len(prefix)
    return -1


def _split(name: str, *, insecure: bool) -> tuple[Endpoint, str]:
    host, _, path = name.partition("/")
    if host == _DOCKER_DOMAIN:
        host = _DOCKER_API_HOST
    return Endpoint(location=host, insecure=insecure), path


def _entry(table: Any, where: str) -> RegistryEntry:
    _expect(table, dict, where)
    location = _location(_typed(table, "location", str, "", where), f"{where}.location")
    prefix = _location(_typed(table, "prefix", str, "", where), f"{where}.prefix")
    insecure = _typed(table, "insecure", bool, False, where)
    blocked = _typed(table, "blocked", bool, False, where)
    _typed(table, "mirror-by-digest-only", bool, False, where)
    if not prefix:
        if not location:
            raise RegistriesConfError(f"{where}: neither location nor prefix is set")
        prefix = location
    elif not location and not prefix.startswith("*."):
        raise RegistriesConfError(
            f"{where}: location may be left out only with a wildcard prefix like *.example.com"
        )
    if prefix.startswith("*.") and "/" in prefix:
        raise RegistriesConfError(f"{where}.prefix: a wildcard prefix names hosts only")
    mirrors = []
    for i, raw in enumerate(_typed(table, "mirror", list, [], where)):
        mirror_where = f"{where}.mirror[{i}]"
        _expect(raw, dict, mirror_where)
        mirror_location = _location(
            _typed(raw, "location", str, "", mirror_where), f"{mirror_where}.location"
        )
        if not mirror_location:
            raise RegistriesConfError(f"{mirror_where}.location is not set")
        _typed(raw, "pull-from-mirror", str, "", mirror_where)
        mirror_insecure = _typed(raw, "insecure", bool, False, mirror_where)
        mirrors.append(Endpoint(mirror_location, mirror_insecure))
    return RegistryEntry(prefix, location, insecure, blocked, tuple(mirrors))


def _location(value: str, where: str) -> str:
    if "://" in value:
        raise RegistriesConfError(f"{where}: {value!r} must not contain a URI scheme")
    return value.rstrip("/")


def _typed(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    if key not in table:
        return default
    name = key if where == key else f"{where}.{key}"
    _expect(table[key], kind, name)
    return table[key]


_KIND_NAMES = {str: "a string", bool: "a boolean", list: "an array", dict: "a table"}


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise RegistriesConfError(
            f"{where}: expected {_KIND_NAMES[kind]}, got {type(value).__name__}"
        )
