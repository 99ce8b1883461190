"""Pre-installed NRI plugins: found in the plugin directory, launched with a pre-connected
socket, reaped when they exit, killed if they outlive their connection.

As upstream: a plugin is an executable named "<two-digit index>-<name>", its configuration is
"<index>-<name>.conf" or else "<name>.conf" in the drop-in directory, and it is started with
its end of a socketpair as fd 3 and only NRI_PLUGIN_NAME, NRI_PLUGIN_IDX and NRI_PLUGIN_SOCKET
in its environment. Nothing is restarted: a plugin that exits is gone until the next start.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import structlog

from runtime.nri.plugin import PluginIdentity

log = structlog.get_logger("moorage.nri")

PLUGIN_SOCKET_FD = 3
# The plugin fds are placed at in the child, so a parent fd below it cannot be overwritten.
_FIRST_FREE_FD = PLUGIN_SOCKET_FD + 1


@dataclass(frozen=True)
class PreinstalledPlugin:
    identity: PluginIdentity
    path: Path
    config: str


def discover_plugins(plugin_path: Path, config_path: Path) -> list[PreinstalledPlugin]:
    """The executables in plugin_path, by file name. One whose name is not "<index>-<name>"
    or whose configuration cannot be read is skipped: the others still run."""
    try:
        entries = sorted(plugin_path.iterdir())
    except FileNotFoundError:
        return []
    plugins = []
    for path in entries:
        if not path.is_file() or not os.access(path, os.X_OK):
            continue
        try:
            identity = PluginIdentity.from_file_name(path.name)
            config = read_plugin_config(config_path, identity)
        except (ValueError, OSError) as exc:
            log.warning("nri plugin skipped", path=str(path), error=str(exc))
            continue
        plugins.append(PreinstalledPlugin(identity, path, config))
    return plugins


def read_plugin_config(config_path: Path, identity: PluginIdentity) -> str:
    for name in (f"{identity}.conf", f"{identity.name}.conf"):
        try:
            return (config_path / name).read_text()
        except FileNotFoundError:
            continue
    return ""


class PluginProcess:
    """A launched plugin's process. It is reaped as soon as it exits (`exited` is then its
    exit code, negative for a signal), through a pidfd: its PID is never reused under us."""

    def __init__(self, plugin: PreinstalledPlugin, pid: int) -> None:
        self.plugin = plugin
        self.pid = pid
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd = os.pidfd_open(pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._reap)

    @classmethod
    def spawn(cls, plugin: PreinstalledPlugin) -> tuple[PluginProcess, socket.socket]:
        """The started process and our end of its connection."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: list[int] = []
        try:
            with theirs:
                fds.append(_move_up(os.dup(theirs.fileno())))
            fds.append(_move_up(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)))
            plugin_fd, null_fd = fds
            identity = plugin.identity
            # Its stderr stays ours: what a plugin complains about lands in our log.
            pid = os.posix_spawn(
                plugin.path,
                [str(plugin.path)],
                {
                    "NRI_PLUGIN_NAME": identity.name,
                    "NRI_PLUGIN_IDX": identity.index,
                    "NRI_PLUGIN_SOCKET": str(PLUGIN_SOCKET_FD),
                },
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null_fd, 0),
                    (os.POSIX_SPAWN_DUP2, null_fd, 1),
                    (os.POSIX_SPAWN_DUP2, plugin_fd, PLUGIN_SOCKET_FD),
                ],
                setsid=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            for fd in fds:
                os.close(fd)
        log.info("nri plugin launched", plugin=identity.name, index=identity.index, pid=pid)
        return cls(plugin, pid), ours

    async def stop(self, grace_s: float) -> None:
        """Wait grace_s for the process to exit (its connection is closed by now), then
        kill it, and wait until it is reaped."""
        if not self.exited.done():
            try:
                async with asyncio.timeout(grace_s):
                    await asyncio.shield(self.exited)
            except TimeoutError:
                log.warning("nri plugin killed", plugin=str(self.plugin.identity), pid=self.pid)
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        await self.exited

    def _reap(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        code = os.waitstatus_to_exitcode(status)
        log.info("nri plugin exited", plugin=str(self.plugin.identity), pid=self.pid, code=code)
        self.exited.set_result(code)


def _move_up(fd: int) -> int:
    """fd (close-on-exec), or a copy of it at or above _FIRST_FREE_FD: a dup2 onto the fd
    itself would leave it close-on-exec, and so closed in the child."""
    if fd >= _FIRST_FREE_FD:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _FIRST_FREE_FD)
    os.close(fd)
    return moved
