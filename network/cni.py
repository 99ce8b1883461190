"""CNI mode: pods wired up by the node's standard CNI plugins, called as the CNI spec says.

Each pod attachment runs the network's plugins in order with ADD (each one gets the previous
one's result as `prevResult`), and in reverse with DEL; network.cni_cache keeps what DEL
needs.

Plugin facts worth knowing (containernetworking-plugins 1.1.1, Debian 12):
- portmap's DEL removes its rules only when `runtimeConfig.portMappings` is passed again,
  which is why the capability arguments are cached with the result.
- bridge's DEL leaves its `ipMasq` chain behind when the netns is gone, so DEL while the pod's
  netns pin still exists.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from network.cni_cache import (
    CachedAttachment,
    cache_document,
    cache_file_name,
    read_cache,
    write_cache,
)
from network.cni_config import (
    NAME,
    NetworkConfigList,
    conf_dir_fingerprint,
    find_plugin,
    load_first_config,
)
from network.cni_plugin import (
    PluginCallFailed,
    RuntimeArgs,
    plugin_env,
    plugin_stdin,
    pod_cni_args,
    pod_ips,
    port_mappings,
    run_plugin,
)
from network.dir_watch import DirWatch
from network.errors import InvalidNetworkRequest, NetworkError, NetworkNotReady
from network.netns import is_pinned
from network.types import NetworkReadiness, PodNetworkRequest, PodNetworkStatus

log = structlog.get_logger("moorage.cni")

NOT_READY_REASON = "NetworkPluginNotReady"
_IFNAME_MAX = 15
_PROTOCOLS = ("tcp", "udp", "sctp")


class CniPluginError(NetworkError):
    """A plugin call failed: it exited non-zero, printed no result, hung or is missing."""

    def __init__(self, plugin: str, command: str, network: str, message: str) -> None:
        super().__init__(
            f"CNI plugin {plugin!r} of network {network!r} failed {command}: {message}"
        )
        self.plugin = plugin
        self.command = command


@dataclass(frozen=True)
class CniSettings:
    # Results cache, one file per pod attachment: the agent's Layout says where.
    cache_dir: Path
    conf_dir: Path = Path("/etc/cni/net.d")
    bin_dirs: tuple[Path, ...] = (Path("/opt/cni/bin"), Path("/usr/lib/cni"))
    plugin_timeout_s: float = 10.0
    ifname: str = "eth0"


def _check_ifname(ifname: str) -> None:
    if (
        not ifname
        or ifname in (".", "..")
        or len(ifname) > _IFNAME_MAX
        or any(c in ifname for c in "/:")
        or any(c.isspace() for c in ifname)
    ):
        raise InvalidNetworkRequest(f"invalid CNI interface name {ifname!r}")


def _check_sandbox_id(sandbox_id: str) -> None:
    if not NAME.match(sandbox_id):
        raise InvalidNetworkRequest(f"invalid sandbox id {sandbox_id!r} for CNI")


def _check_request(pod: PodNetworkRequest) -> None:
    _check_sandbox_id(pod.sandbox_id)
    for what, value in (
        ("pod name", pod.pod_name),
        ("pod namespace", pod.pod_namespace),
        ("pod uid", pod.pod_uid),
    ):
        if any(c in value for c in ";=") or any(c.isspace() for c in value):
            raise InvalidNetworkRequest(
                f"{what} {value!r} of sandbox {pod.sandbox_id} cannot be a CNI_ARGS value"
            )
    for hp in pod.host_ports:
        if hp.protocol.lower() not in _PROTOCOLS:
            raise InvalidNetworkRequest(
                f"hostPort {hp.host_port}: unknown protocol {hp.protocol!r}"
            )
        if not 0 <= hp.host_port <= 65535 or not 0 < hp.container_port <= 65535:
            raise InvalidNetworkRequest(
                f"port mapping {hp.host_port}->{hp.container_port} is out of range"
            )
        if hp.host_ip:
            try:
                ipaddress.ip_address(hp.host_ip)
            except ValueError:
                raise InvalidNetworkRequest(f"invalid hostIP {hp.host_ip!r}") from None


def _netns_present(netns: str) -> bool:
    return bool(netns) and is_pinned(Path(netns))


# ---------------------------------------------------------------- the driver


class CniNetwork:
    """network.types.PodNetwork through standard CNI plugins."""

    def __init__(self, settings: CniSettings) -> None:
        _check_ifname(settings.ifname)
        self.settings = settings
        self._fingerprint: tuple[object, ...] | None = None
        self._config: NetworkConfigList | None = None
        self._config_problem = ""
        self._status_problem = ""
        self._watch = DirWatch((settings.conf_dir, *settings.bin_dirs))
        # (a configuration, its plugins not installed): dropped when a watched dir changes.
        self._missing: tuple[NetworkConfigList, list[str]] | None = None

    # -- configuration

    def current_config(self) -> NetworkConfigList | None:
        """The configuration in use, read again when the conf dir changed since last time."""
        if not self._watch.changed():
            return self._config
        self._missing = None
        fingerprint = conf_dir_fingerprint(self.settings.conf_dir)
        if fingerprint != self._fingerprint:
            config, problem = load_first_config(self.settings.conf_dir)
            self._fingerprint, self._config, self._config_problem = fingerprint, config, problem
            self._status_problem = ""
            if config is not None:
                log.info(
                    "cni config loaded",
                    network=config.name,
                    cni_version=config.cni_version,
                    source=config.source,
                    plugins=[p["type"] for p in config.plugins],
                )
        return self._config

    def _missing_plugins(self, config: NetworkConfigList) -> list[str]:
        """Looked for again only after the conf or bin dirs changed (current_config)."""
        if self._missing is None or self._missing[0] is not config:
            missing = [
                p["type"]
                for p in config.plugins
                if find_plugin(p["type"], self.settings.bin_dirs) is None
            ]
            self._missing = config, missing
        return self._missing[1]

    def _bin_dirs_text(self) -> str:
        return ", ".join(str(d) for d in self.settings.bin_dirs)

    def readiness(self) -> NetworkReadiness:
        config = self.current_config()
        if config is None:
            return NetworkReadiness(
                False,
                NOT_READY_REASON,
                f"cni config uninitialized: no usable CNI network configuration in "
                f"{self.settings.conf_dir}: {self._config_problem}",
            )
        missing = self._missing_plugins(config)
        if missing:
            return NetworkReadiness(
                False,
                NOT_READY_REASON,
                f"CNI network {config.name!r} from {config.source}: plugin(s) "
                f"{', '.join(missing)} not found in {self._bin_dirs_text()}",
            )
        if self._status_problem:
            return NetworkReadiness(False, NOT_READY_REASON, self._status_problem)
        return NetworkReadiness(True)

    def _config_for_attach(self) -> NetworkConfigList:
        config = self.current_config()
        if config is None:
            raise NetworkNotReady(
                f"no usable CNI network configuration in {self.settings.conf_dir}: "
                f"{self._config_problem}"
            )
        return config

    # -- plugin calls

    async def _call(
        self,
        config: NetworkConfigList,
        plugin: dict[str, Any],
        command: str,
        rt: RuntimeArgs | None,
        prev_result: dict[str, Any] | None = None,
    ) -> bytes:
        kind = plugin["type"]
        binary = find_plugin(kind, self.settings.bin_dirs)
        if binary is None:
            raise CniPluginError(
                kind, command, config.name, f"not found in {self._bin_dirs_text()}"
            )
        stdin = plugin_stdin(
            config, plugin, prev_result, rt.capability_args if rt is not None else None
        )
        env = plugin_env(command, rt, self.settings.bin_dirs)
        started = time.monotonic()
        try:
            stdout = await run_plugin(binary, env, stdin, self.settings.plugin_timeout_s)
        except PluginCallFailed as exc:
            raise CniPluginError(kind, command, config.name, str(exc)) from None
        log.debug(
            "cni plugin call",
            plugin=kind,
            command=command,
            container_id=rt.container_id if rt else "",
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return stdout

    async def _add_chain(self, config: NetworkConfigList, rt: RuntimeArgs) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        for plugin in config.plugins:
            stdout = await self._call(config, plugin, "ADD", rt, result)
            try:
                parsed = json.loads(stdout)
            except (ValueError, UnicodeDecodeError):
                parsed = None
            if not isinstance(parsed, dict):
                raise CniPluginError(
                    plugin["type"], "ADD", config.name, "printed no result JSON object"
                )
            result = parsed
        assert result is not None
        return result

    async def _del_chain(
        self, config: NetworkConfigList, rt: RuntimeArgs, prev_result: dict[str, Any] | None
    ) -> list[str]:
        """DEL every plugin, last first, going on past failures; the failures."""
        if config.version < (0, 4, 0):
            prev_result = None  # prevResult on DEL came with 0.4.0
        failures = []
        for plugin in reversed(config.plugins):
            try:
                await self._call(config, plugin, "DEL", rt, prev_result)
            except CniPluginError as exc:
                failures.append(str(exc))
        return failures

    # -- the cache

    def _cache_path(self, network: str, sandbox_id: str) -> Path:
        return self.settings.cache_dir / cache_file_name(network, sandbox_id, self.settings.ifname)

    def _cached_attachments(self, sandbox_id: str) -> list[CachedAttachment]:
        found = []
        pattern = f"*-{sandbox_id}-{self.settings.ifname}"
        for path in sorted(self.settings.cache_dir.glob(pattern)):
            try:
                entry = read_cache(path)
            except (OSError, ValueError) as exc:
                log.warning("cni cache file unreadable", path=str(path), error=str(exc))
                continue
            if entry.sandbox_id == sandbox_id and entry.ifname == self.settings.ifname:
                found.append(entry)
        return found

    # -- PodNetwork

    async def prepare(self) -> None:
        """Nothing to set up on the host: the plugins do that; make the cache dir."""
        await asyncio.to_thread(
            lambda: self.settings.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        )

    async def attach(self, pod: PodNetworkRequest) -> PodNetworkStatus:
        _check_request(pod)
        if not pod.netns_path:
            raise InvalidNetworkRequest(f"sandbox {pod.sandbox_id} has no network namespace")
        config = self._config_for_attach()
        missing = self._missing_plugins(config)
        if missing:
            raise CniPluginError(
                missing[0], "ADD", config.name, f"not found in {self._bin_dirs_text()}"
            )
        rt = RuntimeArgs(
            container_id=pod.sandbox_id,
            netns=pod.netns_path,
            ifname=self.settings.ifname,
            cni_args=pod_cni_args(pod),
            capability_args={"portMappings": port_mappings(pod.host_ports)},
        )
        started = time.monotonic()
        try:
            result = await self._add_chain(config, rt)
            ips = pod_ips(result, pod.netns_path)
            if not ips:
                raise NetworkError(
                    f"CNI network {config.name!r} gave sandbox {pod.sandbox_id} no IP address"
                )
            path = self._cache_path(config.name, pod.sandbox_id)
            try:
                await asyncio.to_thread(write_cache, path, cache_document(config, rt, result))
            except OSError as exc:
                raise NetworkError(f"cannot write CNI result cache {path}: {exc}") from None
        except BaseException as exc:
            # Undo the whole list, so no half-built attachment stays behind.
            failures = await asyncio.shield(self._del_chain(config, rt, None))
            log.warning(
                "cni add failed, attachment removed",
                sandbox_id=pod.sandbox_id,
                network=config.name,
                error=str(exc),
                cleanup_failures=failures,
            )
            raise
        log.info(
            "cni attached",
            sandbox_id=pod.sandbox_id,
            network=config.name,
            ips=ips,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return PodNetworkStatus(ips=ips)

    async def detach(self, pod: PodNetworkRequest) -> None:
        _check_sandbox_id(pod.sandbox_id)
        netns = pod.netns_path if _netns_present(pod.netns_path) else ""
        cached = self._cached_attachments(pod.sandbox_id)
        if not cached:
            config = self.current_config()
            if config is None:
                log.info("cni detach: no cache and no config", sandbox_id=pod.sandbox_id)
                return
            rt = RuntimeArgs(
                pod.sandbox_id,
                netns,
                self.settings.ifname,
                pod_cni_args(pod),
                {"portMappings": port_mappings(pod.host_ports)},
            )
            failures = await self._del_chain(config, rt, None)
            self._settle(pod.sandbox_id, netns, failures, None)
            return
        problems = []
        for entry in cached:
            try:
                await self._release(entry, netns)
            except NetworkError as exc:
                problems.append(str(exc))
        if problems:
            raise NetworkError("; ".join(problems))

    async def _release(self, entry: CachedAttachment, netns: str) -> None:
        """DEL one cached attachment with what ADD used; the cache file goes on success."""
        config = entry.config or self.current_config()
        if config is None:
            raise NetworkError(
                f"cannot release CNI attachment {entry.path.name}: its cached configuration "
                f"is unusable and {self.settings.conf_dir} has none"
            )
        rt = RuntimeArgs(
            entry.sandbox_id, netns, entry.ifname, entry.cni_args, entry.capability_args
        )
        prev_result = entry.result if entry.config is not None and entry.result else None
        failures = await self._del_chain(config, rt, prev_result)
        self._settle(entry.sandbox_id, netns, failures, entry.path)

    def _settle(
        self, sandbox_id: str, netns: str, failures: list[str], cache_path: Path | None
    ) -> None:
        """After a DEL: drop the cache file, or raise (only while the netns still exists)."""
        if failures and netns:
            raise NetworkError(f"CNI DEL of sandbox {sandbox_id} failed: {'; '.join(failures)}")
        if failures:
            log.warning(
                "cni del failed after the netns was gone; ignored",
                sandbox_id=sandbox_id,
                failures=failures,
            )
        if cache_path is not None:
            cache_path.unlink(missing_ok=True)
        log.info("cni detached", sandbox_id=sandbox_id)

    async def status(self) -> None:
        """CNI STATUS where the configuration is 1.1.0 or newer; NetworkNotReady if not ready."""
        config = self._config_for_attach()
        if config.version < (1, 1, 0):
            return
        for plugin in config.plugins:
            try:
                await self._call(config, plugin, "STATUS", None)
            except CniPluginError as exc:
                self._status_problem = str(exc)
                raise NetworkNotReady(str(exc)) from None
        self._status_problem = ""

    async def reconcile(self, live: list[PodNetworkRequest]) -> list[str]:
        """Release cached attachments of sandboxes that are not live; one line per fix."""
        live_ids = {pod.sandbox_id for pod in live}
        fixed: list[str] = []
        try:
            paths = sorted(self.settings.cache_dir.iterdir())
        except FileNotFoundError:
            return fixed
        for path in paths:
            if path.name.startswith("."):
                if path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
                    fixed.append(f"removed unfinished CNI cache file {path.name}")
                continue
            try:
                entry = read_cache(path)
            except (OSError, ValueError) as exc:
                path.unlink(missing_ok=True)
                fixed.append(f"removed unreadable CNI cache file {path.name} ({exc})")
                continue
            if entry.sandbox_id in live_ids:
                continue
            netns = entry.netns if _netns_present(entry.netns) else ""
            try:
                await self._release(entry, netns)
            except NetworkError as exc:
                fixed.append(
                    f"could not release CNI attachment of gone sandbox {entry.sandbox_id}: {exc}"
                )
                continue
            fixed.append(
                f"released CNI attachment of gone sandbox {entry.sandbox_id} "
                f"on network {entry.network}"
            )
        return fixed
