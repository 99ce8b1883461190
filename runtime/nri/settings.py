"""What NRI needs from the agent's configuration (the daemon's TOML is parsed in cri/config.py).

The defaults are containerd/nri's: its socket, plugin and drop-in configuration paths, and its
registration and request timeouts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class OnPluginTimeout(enum.StrEnum):
    """What a pod or container operation does when a plugin does not answer in time. Either
    way the plugin is disconnected: its answers can no longer be trusted to come."""

    PROCEED = "proceed"
    FAIL = "fail"


@dataclass(frozen=True)
class NriSettings:
    enable: bool = False
    socket_path: Path = Path("/var/run/nri/nri.sock")
    # Pre-installed plugins, executables named "<two-digit index>-<name>", launched at start.
    plugin_path: Path = Path("/opt/nri/plugins")
    # "<index>-<name>.conf" or "<name>.conf": the configuration a launched plugin is sent.
    plugin_config_path: Path = Path("/etc/nri/conf.d")
    registration_timeout_s: float = 5.0
    request_timeout_s: float = 2.0
    on_plugin_timeout: OnPluginTimeout = OnPluginTimeout.PROCEED
    # Only pre-installed plugins: nothing listens on socket_path.
    disable_connections: bool = False

    def __post_init__(self) -> None:
        if self.registration_timeout_s <= 0 or self.request_timeout_s <= 0:
            raise ValueError(
                "NRI timeouts must be positive: "
                f"registration {self.registration_timeout_s}s, request {self.request_timeout_s}s"
            )
        # A TOML string is accepted as it is, and one that is neither value refused here.
        object.__setattr__(self, "on_plugin_timeout", OnPluginTimeout(self.on_plugin_timeout))
