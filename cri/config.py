"""The agent's configuration: TOML in, dataclasses out, and back to annotated TOML."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from network.errors import InvalidNetworkRequest
from network.ipam import parse_ranges
from runtime.containers.model import SeccompKind
from runtime.settings import ImageSettings, RuntimeHandlerSettings, RuntimeSettings

DEFAULT_CONFIG_PATH = Path("/etc/moorage/moorage.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    socket: Path = Path("/run/moorage/moorage.sock")
    log_level: str = "info"
    shutdown_grace_s: float = 10.0
    # "" turns the Prometheus endpoint off.
    metrics_address: str = "127.0.0.1:9777"
    # Port 0: any free port; the RPCs return URLs with the one the kernel chose.
    streaming_address: str = "127.0.0.1:0"
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)


# (section, key, comment) in the order `moorage config` prints them; the value comes from
# the Config, so the reference can never drift from the defaults.
_TOP_DOCS = {
    "socket": "CRI gRPC unix socket (created mode 0660)",
    "root_dir": "persistent state: state.db, images, container bundles",
    "run_dir": "volatile state: namespace pins, per-pod /dev/shm mounts",
    "log_level": "debug, info, warning or error",
    "shutdown_grace_s": "on SIGTERM, how long in-flight calls may run before they are cut",
}
_RUNTIME_DOCS = {
    "default_handler": "OCI runtime handler used when RunPodSandbox names none",
    "conmon_path": "conmon binary that supervises each container",
    "env_exec_path": "static helper that starts containers with non-UTF-8 env values",
    "seccomp_profile": "profile applied for seccomp RuntimeDefault",
    "cgroup_driver": "cgroupfs, or systemd where the host runs systemd",
    "default_cgroup_parent": "cgroup parent for pods that set no linux.cgroup_parent",
    "infra_command": "pid 1 of pods that share one PID namespace",
    "shm_size_bytes": "size of each pod's /dev/shm tmpfs",
}
_NETWORK_DOCS = {
    "mode": "bridge (built in) or cni (plugins from cni_conf_dir)",
    "pod_cidr": "pod range until kubelet sends one; 'v4cidr,v6cidr' for dual stack",
    "bridge": "bridge mode: the node's pod bridge",
    "mtu": "bridge mode: MTU of the bridge and the pod veths",
    "chain_prefix": "bridge mode: prefix of the iptables chains Moorage owns",
    "cni_conf_dir": "cni mode: the first .conflist/.conf here by name is used",
    "cni_bin_dirs": "cni mode: where plugins are looked up, in order",
    "cni_plugin_timeout_s": "cni mode: a plugin call running longer is killed",
}
_IMAGES_DOCS = {
    "registries_conf": "containers-registries.conf v2: mirrors, blocked and insecure registries",
    "certs_dir": "per-registry CA and client certs in <dir>/<host[:port]>/",
    "max_concurrent_downloads": "layers of one pull downloaded at once",
    "max_layer_bytes": "a layer unpacking to more bytes than this fails the pull",
    "pull_retries": "retries of a blob or manifest request after a transient failure",
    "pinned_images": "images reported pinned, so kubelet never garbage-collects them",
}
_METRICS_DOCS = {
    "address": 'host:port of the Prometheus endpoint (/metrics); "" turns it off',
}
_SECURITY_DOCS = {
    "default_seccomp": (
        "seccomp for containers whose request names no profile: unconfined (the CRI's "
        "default) or runtime/default"
    ),
}
# The [security] default_seccomp words and what they mean.
DEFAULT_SECCOMP = {
    "unconfined": SeccompKind.UNCONFINED,
    "runtime/default": SeccompKind.RUNTIME_DEFAULT,
}
_STREAMING_DOCS = {
    "address": "host:port of the exec/attach/port-forward server; port 0 = any free port",
}
# [network] key -> (attribute of RuntimeSettings.bridge, type); the others are top-level.
_BRIDGE_KEYS = {
    "bridge": ("bridge", str),
    "mtu": ("mtu", int),
    "chain_prefix": ("chain_prefix", str),
}
NETWORK_MODES = ("bridge", "cni")
_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):\d{1,5}")


def load_config(path: Path | None) -> Config:
    """Read `path`; with None, the default file if it exists, else built-in defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Config()
        path = DEFAULT_CONFIG_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    raw = dict(raw)
    runtime_raw = dict(_typed(raw.pop("runtime", {}), dict, source, "runtime"))
    network_raw = dict(_typed(raw.pop("network", {}), dict, source, "network"))
    images_raw = dict(_typed(raw.pop("images", {}), dict, source, "images"))
    metrics_raw = dict(_typed(raw.pop("metrics", {}), dict, source, "metrics"))
    streaming_raw = dict(_typed(raw.pop("streaming", {}), dict, source, "streaming"))
    security_raw = dict(_typed(raw.pop("security", {}), dict, source, "security"))
    handlers_raw = runtime_raw.pop("handlers", None)
    _reject_unknown(raw, {*_TOP_DOCS}, source, "")
    _reject_unknown(runtime_raw, {*_RUNTIME_DOCS}, source, "runtime.")
    _reject_unknown(network_raw, {*_NETWORK_DOCS}, source, "network.")
    _reject_unknown(images_raw, {*_IMAGES_DOCS}, source, "images.")
    _reject_unknown(metrics_raw, {*_METRICS_DOCS}, source, "metrics.")
    _reject_unknown(streaming_raw, {*_STREAMING_DOCS}, source, "streaming.")
    _reject_unknown(security_raw, {*_SECURITY_DOCS}, source, "security.")

    defaults = Config()
    rt: dict[str, Any] = {}
    for key in ("root_dir", "run_dir"):
        if key in raw:
            rt[key] = Path(_typed(raw.pop(key), str, source, key))
    for key, value in runtime_raw.items():
        rt[key] = _like(getattr(defaults.runtime, key), value, source, f"runtime.{key}")
    if "pod_cidr" in network_raw:
        rt["pod_cidr"] = _typed(network_raw["pod_cidr"], str, source, "network.pod_cidr")
    if "mode" in network_raw:
        rt["network_mode"] = _typed(network_raw["mode"], str, source, "network.mode")
    bridge = {
        attr: _typed(network_raw[key], kind, source, f"network.{key}")
        for key, (attr, kind) in _BRIDGE_KEYS.items()
        if key in network_raw
    }
    if bridge:
        rt["bridge"] = replace(defaults.runtime.bridge, **bridge)
    if "cni_conf_dir" in network_raw:
        rt["cni_conf_dir"] = Path(
            _typed(network_raw["cni_conf_dir"], str, source, "network.cni_conf_dir")
        )
    if "cni_bin_dirs" in network_raw:
        dirs = _typed(network_raw["cni_bin_dirs"], list, source, "network.cni_bin_dirs")
        rt["cni_bin_dirs"] = tuple(
            Path(_typed(d, str, source, "network.cni_bin_dirs[]")) for d in dirs
        )
    if "cni_plugin_timeout_s" in network_raw:
        rt["cni_plugin_timeout_s"] = float(
            _typed(
                network_raw["cni_plugin_timeout_s"],
                (int, float),
                source,
                "network.cni_plugin_timeout_s",
            )
        )
    if "default_seccomp" in security_raw:
        word = _typed(security_raw["default_seccomp"], str, source, "security.default_seccomp")
        if word not in DEFAULT_SECCOMP:
            raise ConfigError(
                f"{source}: security.default_seccomp {word!r}: {' or '.join(DEFAULT_SECCOMP)}"
            )
        rt["default_seccomp"] = DEFAULT_SECCOMP[word]
    if handlers_raw is not None:
        rt["handlers"] = _parse_handlers(handlers_raw, source)
    if images_raw:
        rt["images"] = _parse_images(images_raw, defaults.runtime.images, source)

    top: dict[str, Any] = {}
    if "socket" in raw:
        top["socket"] = Path(_typed(raw["socket"], str, source, "socket"))
    if "log_level" in raw:
        top["log_level"] = _typed(raw["log_level"], str, source, "log_level")
    if "address" in metrics_raw:
        top["metrics_address"] = _typed(metrics_raw["address"], str, source, "metrics.address")
    if "address" in streaming_raw:
        top["streaming_address"] = _typed(
            streaming_raw["address"], str, source, "streaming.address"
        )
    if "shutdown_grace_s" in raw:
        top["shutdown_grace_s"] = float(
            _typed(raw["shutdown_grace_s"], (int, float), source, "shutdown_grace_s")
        )
    return validate(replace(defaults, runtime=replace(defaults.runtime, **rt), **top))


def validate(config: Config) -> Config:
    rt = config.runtime
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level {config.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if rt.cgroup_driver not in ("cgroupfs", "systemd"):
        raise ConfigError(f"runtime.cgroup_driver {rt.cgroup_driver!r}: cgroupfs or systemd")
    if rt.default_handler not in rt.handlers:
        raise ConfigError(
            f"runtime.default_handler {rt.default_handler!r} is not among runtime.handlers "
            f"({', '.join(sorted(rt.handlers))})"
        )
    if rt.network_mode not in NETWORK_MODES:
        raise ConfigError(f"network.mode {rt.network_mode!r}: bridge or cni")
    try:
        parse_ranges(rt.pod_cidr)
    except InvalidNetworkRequest as exc:
        raise ConfigError(f"network.pod_cidr: {exc}") from None
    if not 0 < len(rt.bridge.bridge) < 16:
        raise ConfigError(f"network.bridge {rt.bridge.bridge!r}: 1 to 15 characters")
    if not 576 <= rt.bridge.mtu <= 65535:
        raise ConfigError(f"network.mtu {rt.bridge.mtu}: 576 to 65535")
    if not re.fullmatch(r"[A-Z][A-Z0-9-]{0,11}", rt.bridge.chain_prefix):
        raise ConfigError(
            f"network.chain_prefix {rt.bridge.chain_prefix!r}: up to 12 of A-Z, 0-9 and -"
        )
    if not rt.cni_bin_dirs:
        raise ConfigError("network.cni_bin_dirs is empty")
    if rt.cni_plugin_timeout_s <= 0:
        raise ConfigError("network.cni_plugin_timeout_s must be positive")
    if not rt.infra_command:
        raise ConfigError("runtime.infra_command is empty")
    if rt.shm_size_bytes <= 0:
        raise ConfigError("runtime.shm_size_bytes must be positive")
    if rt.images.max_concurrent_downloads < 1:
        raise ConfigError("images.max_concurrent_downloads must be at least 1")
    if rt.images.max_layer_bytes < 1:
        raise ConfigError("images.max_layer_bytes must be positive")
    if rt.images.pull_retries < 0:
        raise ConfigError("images.pull_retries must not be negative")
    if config.shutdown_grace_s < 0:
        raise ConfigError("shutdown_grace_s must not be negative")
    if config.metrics_address and not _ADDRESS.fullmatch(config.metrics_address):
        raise ConfigError(
            f'metrics.address {config.metrics_address!r}: host:port or [v6]:port, or ""'
        )
    if not _ADDRESS.fullmatch(config.streaming_address):
        raise ConfigError(f"streaming.address {config.streaming_address!r}: host:port or [v6]:port")
    return config


def _parse_images(raw: dict[str, Any], defaults: ImageSettings, source: str) -> ImageSettings:
    values = {
        key: _like(getattr(defaults, key), value, source, f"images.{key}")
        for key, value in raw.items()
    }
    return replace(defaults, **values)


def _like(default: Any, value: Any, source: str, key: str) -> Any:
    """`value` checked and converted to the kind of `default`: a path, a list of strings, or
    a plain value of the same type."""
    if isinstance(default, Path):
        return Path(_typed(value, str, source, key))
    if isinstance(default, tuple):
        items = _typed(value, list, source, key)
        return tuple(_typed(i, str, source, f"{key}[]") for i in items)
    return _typed(value, type(default), source, key)


def _parse_handlers(raw: Any, source: str) -> dict[str, RuntimeHandlerSettings]:
    table = _typed(raw, dict, source, "runtime.handlers")
    handlers = {}
    for name, raw_entry in table.items():
        entry = _typed(raw_entry, dict, source, f"runtime.handlers.{name}")
        _reject_unknown(entry, {"path"}, source, f"runtime.handlers.{name}.")
        if "path" not in entry:
            raise ConfigError(f"{source}: runtime.handlers.{name}.path is missing")
        path = _typed(entry["path"], str, source, f"runtime.handlers.{name}.path")
        handlers[name] = RuntimeHandlerSettings(name, Path(path))
    if not handlers:
        raise ConfigError(f"{source}: runtime.handlers is empty")
    return handlers


def _typed(value: Any, expected: type | tuple[type, ...], source: str, key: str) -> Any:
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"{source}: {key} must not be a boolean")
    if not isinstance(value, expected):
        raise ConfigError(f"{source}: {key} has the wrong type ({type(value).__name__})")
    return value


def _reject_unknown(table: dict[str, Any], known: set[str], source: str, prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]}")


def render_config(config: Config) -> str:
    """The effective configuration as TOML, every key with its value and a comment."""
    rt = config.runtime
    top_values = {
        "socket": config.socket,
        "root_dir": rt.root_dir,
        "run_dir": rt.run_dir,
        "log_level": config.log_level,
        "shutdown_grace_s": config.shutdown_grace_s,
    }
    lines = [_line(k, v, _TOP_DOCS[k]) for k, v in top_values.items()]
    lines += ["", "[runtime]"]
    lines += [_line(k, getattr(rt, k), doc) for k, doc in _RUNTIME_DOCS.items()]
    lines += ["", "[network]"]
    network_values = {
        "mode": rt.network_mode,
        "pod_cidr": rt.pod_cidr,
        **{key: getattr(rt.bridge, attr) for key, (attr, _) in _BRIDGE_KEYS.items()},
        "cni_conf_dir": rt.cni_conf_dir,
        "cni_bin_dirs": rt.cni_bin_dirs,
        "cni_plugin_timeout_s": rt.cni_plugin_timeout_s,
    }
    lines += [_line(k, network_values[k], doc) for k, doc in _NETWORK_DOCS.items()]
    lines += ["", "[images]"]
    lines += [_line(k, getattr(rt.images, k), doc) for k, doc in _IMAGES_DOCS.items()]
    lines += ["", "[metrics]", _line("address", config.metrics_address, _METRICS_DOCS["address"])]
    seccomp_word = next(w for w, k in DEFAULT_SECCOMP.items() if k is rt.default_seccomp)
    lines += [
        "",
        "[security]",
        _line("default_seccomp", seccomp_word, _SECURITY_DOCS["default_seccomp"]),
    ]
    lines += [
        "",
        "[streaming]",
        _line("address", config.streaming_address, _STREAMING_DOCS["address"]),
    ]
    for name, handler in rt.handlers.items():
        table = f"runtime.handlers.{_toml_key(name)}"
        lines += ["", f"[{table}]", _line("path", handler.path, "OCI runtime")]
    return "\n".join(lines) + "\n"


def _line(key: str, value: object, doc: str) -> str:
    return f"{key} = {_toml_value(value)}  # {doc}"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    # A JSON string without \u escapes above the BMP is a valid TOML basic string.
    return json.dumps(text, ensure_ascii=False)


def _toml_key(key: str) -> str:
    return (
        key
        if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
        else (_toml_string(key))
    )


def config_as_dict(config: Config) -> dict[str, Any]:
    """For Status(verbose): the effective config as JSON-ready data."""
    return tomllib.loads(render_config(config))
