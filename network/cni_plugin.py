"""One CNI plugin call: what goes in (stdin, environment), running it, what comes back."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from network.cni_config import NetworkConfigList
from network.errors import NetworkError
from network.types import HostPort, PodNetworkRequest

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_OUTPUT_QUOTE_CHARS = 400


@dataclass(frozen=True)
class RuntimeArgs:
    """What a plugin is told about one attachment besides the configuration."""

    container_id: str
    netns: str
    ifname: str
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: dict[str, Any] = field(default_factory=dict)


def pod_cni_args(pod: PodNetworkRequest) -> tuple[tuple[str, str], ...]:
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", pod.pod_namespace),
        ("K8S_POD_NAME", pod.pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", pod.sandbox_id),
        ("K8S_POD_UID", pod.pod_uid),
    )


def format_cni_args(pairs: Iterable[tuple[str, str]]) -> str:
    return ";".join(f"{key}={value}" for key, value in pairs)


def port_mappings(host_ports: Iterable[HostPort]) -> list[dict[str, Any]]:
    """The `portMappings` capability argument; a hostPort of 0 maps nothing."""
    return [
        {
            "hostPort": hp.host_port,
            "containerPort": hp.container_port,
            "protocol": hp.protocol.lower(),
            "hostIP": hp.host_ip,
        }
        for hp in host_ports
        if hp.host_port != 0
    ]


def plugin_stdin(
    config: NetworkConfigList,
    plugin: dict[str, Any],
    prev_result: dict[str, Any] | None,
    capability_args: dict[str, Any] | None,
) -> bytes:
    """The plugin's configuration with the list's name and version, as libcni builds it.

    `runtimeConfig` carries only the capabilities the plugin declares.
    """
    document = dict(plugin)
    document["name"] = config.name
    document["cniVersion"] = config.cni_version
    if prev_result is not None:
        document["prevResult"] = prev_result
    if capability_args is not None:
        declared = plugin.get("capabilities") or {}
        runtime_config = {
            key: value
            for key, value in capability_args.items()
            if declared.get(key) is True and value is not None
        }
        if runtime_config:
            document["runtimeConfig"] = runtime_config
    return json.dumps(document).encode()


def plugin_env(command: str, rt: RuntimeArgs | None, bin_dirs: Sequence[Path]) -> dict[str, str]:
    env = {
        "CNI_COMMAND": command,
        "CNI_PATH": ":".join(str(d) for d in bin_dirs),
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
    }
    if rt is not None:
        env |= {
            "CNI_CONTAINERID": rt.container_id,
            "CNI_NETNS": rt.netns,
            "CNI_IFNAME": rt.ifname,
            "CNI_ARGS": format_cni_args(rt.cni_args),
        }
    return env


def pod_ips(result: dict[str, Any], netns: str) -> list[str]:
    """The pod's addresses from an ADD result, IPv4 first, without prefix lengths.

    Results of 0.3.0 and later list `ips` with an index into `interfaces`: those on an
    interface inside the sandbox count (all of them when none is marked). 0.1.0/0.2.0 results
    carry `ip4` and `ip6`. Loopback addresses are never a pod's address.
    """
    cidrs: list[str] = []
    if isinstance(result.get("ips"), list):
        interfaces = result.get("interfaces")
        interfaces = interfaces if isinstance(interfaces, list) else []
        inside = {
            i
            for i, iface in enumerate(interfaces)
            if isinstance(iface, dict) and iface.get("sandbox") and iface["sandbox"] == netns
        }
        entries = [e for e in result["ips"] if isinstance(e, dict)]
        chosen = [e for e in entries if e.get("interface") in inside] or entries
        cidrs = [e["address"] for e in chosen if isinstance(e.get("address"), str)]
    else:
        for key in ("ip4", "ip6"):
            block = result.get(key)
            if isinstance(block, dict) and isinstance(block.get("ip"), str):
                cidrs.append(block["ip"])
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for cidr in cidrs:
        try:
            address = ipaddress.ip_interface(cidr).ip
        except ValueError:
            raise NetworkError(f"CNI result holds an invalid address {cidr!r}") from None
        if not address.is_loopback and address not in addresses:
            addresses.append(address)
    return [str(a) for a in sorted(addresses, key=lambda a: a.version)]


def _plugin_failure(returncode: int, stdout: bytes, stderr: bytes) -> str:
    """The plugin's own account of a failure: CNI error JSON on stdout, else its stderr."""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        error = json.loads(stdout)
        if isinstance(error, dict) and error.get("msg"):
            text = str(error["msg"])
            if error.get("details"):
                text += f": {error['details']}"
            if "code" in error:
                text += f" (CNI error code {error['code']})"
            return text
    output = (stderr or stdout).decode(errors="replace").strip()
    if output:
        return f"exit status {returncode}: {output[-_OUTPUT_QUOTE_CHARS:]}"
    return f"exit status {returncode}"


class PluginCallFailed(Exception):
    pass


async def run_plugin(binary: Path, env: dict[str, str], stdin: bytes, timeout_s: float) -> bytes:
    """Execute one plugin call; its stdout on success.

    The plugin runs in a session of its own, so a timeout (or a cancelled caller) kills
    everything it started, not only the plugin.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        raise PluginCallFailed(f"cannot execute {binary}: {exc.strerror}") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5.0)
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise PluginCallFailed(f"timed out after {timeout_s:g}s and was killed") from None
    if process.returncode != 0:
        raise PluginCallFailed(_plugin_failure(process.returncode or 0, stdout, stderr))
    return stdout
