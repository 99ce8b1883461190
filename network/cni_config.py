"""CNI network configuration files: which one is in force, and whether it is valid.

The network is the first file by name in the conf dir (`.conflist`, or a single-plugin
`.conf`/`.json` wrapped into a list as libcni does).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("moorage.cni")

CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
# The newest spec version this driver speaks (STATUS came with 1.1.0).
MAX_CNI_VERSION = (1, 1, 0)
# libcni's rule for network names and container ids; plugin types are held to it too, so
# neither a cache file name nor a plugin path can leave its directory.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CniConfigError(ValueError):
    """A network configuration file that cannot be used, and why."""


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: str = ""
    # The list as one JSON document: a .conflist as read, a .conf as wrapped.
    raw: bytes = b""

    @property
    def version(self) -> tuple[int, int, int]:
        return version_tuple(self.cni_version)


def version_tuple(version: str) -> tuple[int, int, int]:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniConfigError(f"cniVersion {version!r} is not of the form X.Y.Z")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _chosen_version(document: dict[str, Any]) -> str:
    """cniVersion, or with `cniVersions` (spec 1.1) the highest one this driver speaks."""
    version = document.get("cniVersion")
    if version is not None and not isinstance(version, str):
        raise CniConfigError("cniVersion is not a string")
    candidates = [version] if version else []
    listed = document.get("cniVersions")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
            raise CniConfigError("cniVersions is not a list of strings")
        candidates += [v for v in listed if version_tuple(v) <= MAX_CNI_VERSION]
    if not candidates:
        raise CniConfigError("no cniVersion")
    chosen = max(candidates, key=version_tuple)
    if version_tuple(chosen) > MAX_CNI_VERSION:
        supported = ".".join(map(str, MAX_CNI_VERSION))
        raise CniConfigError(f"cniVersion {chosen} is newer than {supported}, the newest known")
    return chosen


def _flag(document: dict[str, Any], key: str) -> bool:
    value = document.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CniConfigError(f"{key} is neither true nor false")


def _check_plugin(index: int, plugin: object) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise CniConfigError(f"plugin {index} is not a JSON object")
    kind = plugin.get("type")
    if not isinstance(kind, str) or not kind:
        raise CniConfigError(f"plugin {index} has no type")
    if not NAME.match(kind):
        raise CniConfigError(f"plugin {index} has an invalid type {kind!r}")
    capabilities = plugin.get("capabilities", {})
    if not isinstance(capabilities, dict):
        raise CniConfigError(f"plugin {index} ({kind}): capabilities is not an object")
    return plugin


def parse_config_list(data: bytes, source: str = "", single: bool = False) -> NetworkConfigList:
    """Validate a network configuration list; `single` = a .conf/.json file, wrapped as libcni does.

    A .conf that already holds a `plugins` list is read as a list.
    """
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniConfigError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CniConfigError("not a JSON object")
    if single and "plugins" not in document:
        _check_plugin(0, document)
        document = {
            "cniVersion": document.get("cniVersion"),
            "name": document.get("name"),
            "plugins": [document],
        }
        data = json.dumps(document).encode()
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise CniConfigError("no network name")
    if not NAME.match(name):
        raise CniConfigError(f"invalid network name {name!r}")
    version = _chosen_version(document)
    plugins = document.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CniConfigError("no plugins")
    # libcni refuses a list whose disableCheck is not a boolean, though the agent never CHECKs.
    _flag(document, "disableCheck")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(_check_plugin(i, p) for i, p in enumerate(plugins)),
        source=source,
        raw=data,
    )


def config_files(conf_dir: Path) -> list[Path]:
    """Candidate files in name order, as libcni's ConfFiles lists them."""
    names = sorted(
        entry.name
        for entry in os.scandir(conf_dir)
        if entry.name.endswith(CONFIG_SUFFIXES) and not entry.is_dir()
    )
    return [conf_dir / name for name in names]


def load_first_config(conf_dir: Path) -> tuple[NetworkConfigList | None, str]:
    """The first usable configuration by file name, or None and why there is none."""
    try:
        files = config_files(conf_dir)
    except FileNotFoundError:
        return None, f"{conf_dir} does not exist"
    except OSError as exc:
        return None, f"cannot read {conf_dir}: {exc.strerror}"
    skipped: list[str] = []
    for path in files:
        try:
            config = parse_config_list(
                path.read_bytes(), str(path), single=path.suffix != ".conflist"
            )
        except (OSError, CniConfigError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            log.warning("cni config skipped", path=str(path), reason=reason)
            skipped.append(f"{path.name}: {reason}")
            continue
        return config, ""
    if skipped:
        return None, f"no valid network configuration in {conf_dir} ({'; '.join(skipped)})"
    return None, f"no network configuration (.conflist, .conf, .json) in {conf_dir}"


def conf_dir_fingerprint(conf_dir: Path) -> tuple[object, ...]:
    """Changes whenever a configuration file appears, goes, or is rewritten."""
    try:
        entries = []
        with os.scandir(conf_dir) as listing:
            for entry in listing:
                if not entry.name.endswith(CONFIG_SUFFIXES):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    entries.append((entry.name, st.st_ino, st.st_mtime_ns, st.st_size))
        return (os.stat(conf_dir).st_mtime_ns, tuple(sorted(entries)))
    except OSError as exc:
        return ("unreadable", exc.errno)


def find_plugin(kind: str, bin_dirs: Sequence[Path]) -> Path | None:
    for directory in bin_dirs:
        candidate = directory / kind
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
