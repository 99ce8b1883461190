"""The on-disk cache of CNI attachments: one file per pod and interface.

It holds the ADD result, the configuration ADD used and the runtime arguments, so DEL uses
exactly what ADD used even when the conf dir changed since, and a restarted agent
can still release the attachments of pods that are gone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from network.cni_config import CniConfigError, NetworkConfigList, parse_config_list
from network.cni_plugin import RuntimeArgs

log = structlog.get_logger("moorage.cni")

CACHE_KIND = "moorageCniCacheV1"


@dataclass(frozen=True)
class CachedAttachment:
    path: Path
    sandbox_id: str
    network: str
    ifname: str
    netns: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: dict[str, Any]
    config: NetworkConfigList | None  # None when the cached configuration no longer parses
    result: dict[str, Any]


def cache_file_name(network: str, sandbox_id: str, ifname: str) -> str:
    return f"{network}-{sandbox_id}-{ifname}"


def cache_document(config: NetworkConfigList, rt: RuntimeArgs, result: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "kind": CACHE_KIND,
            "containerId": rt.container_id,
            "networkName": config.name,
            "ifName": rt.ifname,
            "netns": rt.netns,
            "cniArgs": [list(pair) for pair in rt.cni_args],
            "capabilityArgs": rt.capability_args,
            "config": config.raw.decode(),
            "result": result,
        }
    ).encode()


def write_cache(path: Path, document: bytes) -> None:
    """Write atomically: a reader sees the old file, the new one, or none, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(document)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def read_cache(path: Path) -> CachedAttachment:
    """Parse one cache file; ValueError when it is not one of ours or is damaged."""
    document = json.loads(path.read_bytes())
    if not isinstance(document, dict) or document.get("kind") != CACHE_KIND:
        raise ValueError("not a moorage CNI cache file")
    names = [document.get(key) for key in ("containerId", "networkName", "ifName")]
    if not all(isinstance(v, str) and v for v in names):
        raise ValueError("no container id, network name or interface name")
    sandbox_id, network, ifname = (str(v) for v in names)
    result = document.get("result")
    capability_args = document.get("capabilityArgs") or {}
    config: NetworkConfigList | None
    try:
        config = parse_config_list(str(document.get("config", "")).encode(), str(path))
    except CniConfigError as exc:
        log.warning("cni cached config unusable", path=str(path), reason=str(exc))
        config = None
    return CachedAttachment(
        path=path,
        sandbox_id=sandbox_id,
        network=network,
        ifname=ifname,
        netns=str(document.get("netns") or ""),
        cni_args=tuple(
            (str(pair[0]), str(pair[1]))
            for pair in document.get("cniArgs") or []
            if isinstance(pair, list) and len(pair) == 2
        ),
        capability_args=capability_args if isinstance(capability_args, dict) else {},
        config=config,
        result=result if isinstance(result, dict) else {},
    )
