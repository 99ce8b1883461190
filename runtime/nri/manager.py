"""The runtime's NRI plugins: pre-installed ones launched at start, external ones accepted on
the NRI socket, and every pod and container event fanned out to them in index order.

A plugin that fails is dropped without affecting the others: one whose connection breaks or
that sends garbage at once, one that times out too, and then the operation proceeds without it,
unless on_plugin_timeout is "fail" and the operation fails with PluginTimedOut. A plugin that
answers an event with an error fails the operation (PluginReturnedError), as upstream. A plugin
can reconnect and register again once its old connection is gone; while it is there, its
identity (index and name) is taken and another registration with it is refused.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from runtime.nri.launch import PluginProcess, PreinstalledPlugin, discover_plugins
from runtime.nri.plugin import (
    ConnectedPlugin,
    PluginFailed,
    PluginIdentity,
    PluginReturnedError,
    PluginTimedOut,
    UpdateContainers,
)
from runtime.nri.proto import api_pb2
from runtime.nri.settings import NriSettings, OnPluginTimeout

log = structlog.get_logger("moorage.nri")

# How long a launched plugin has to exit once disconnected, before it is killed.
STOP_GRACE_S = 1.0

# The pods and containers that exist, for a newly registered plugin's Synchronize.
SyncSource = Callable[
    [], Awaitable[tuple[Sequence[api_pb2.PodSandbox], Sequence[api_pb2.Container]]]
]

_R = TypeVar("_R")


@dataclass(frozen=True)
class ValidationRejection:
    plugin: str
    reason: str


class NriManager:
    """`start()` it, call the event methods from the pod and container operations, `close()`
    it. Replies are (plugin "<index>-<name>", its answer), in index order, for the plugins
    subscribed to the event."""

    def __init__(
        self,
        settings: NriSettings,
        *,
        runtime_name: str,
        runtime_version: str,
        synchronize: SyncSource,
        update_containers: UpdateContainers,
    ) -> None:
        self._settings = settings
        self._runtime_name = runtime_name
        self._runtime_version = runtime_version
        self._synchronize = synchronize
        self._update_containers = update_containers
        self._plugins: list[ConnectedPlugin] = []
        self._claims: dict[PluginIdentity, ConnectedPlugin] = {}
        self._connected: set[ConnectedPlugin] = set()
        self._connection_tasks: set[asyncio.Task[None]] = set()
        self._processes: list[PluginProcess] = []
        self._server: asyncio.Server | None = None
        self._closing = False

    @property
    def plugins(self) -> tuple[ConnectedPlugin, ...]:
        """The registered plugins, in the order they are called."""
        return tuple(p for p in self._plugins if p.alive)

    @property
    def processes(self) -> tuple[PluginProcess, ...]:
        """The pre-installed plugins launched, running or exited."""
        return tuple(self._processes)

    async def start(self) -> None:
        """Launch the pre-installed plugins and wait until each has registered (or failed),
        then listen for external ones."""
        settings = self._settings
        preinstalled = discover_plugins(settings.plugin_path, settings.plugin_config_path)
        await asyncio.gather(*(self._launch(plugin) for plugin in preinstalled))
        if settings.disable_connections:
            log.info("nri external plugin connections disabled")
            return
        path = settings.socket_path
        # As upstream: only the runtime's user may reach the socket; a directory that exists
        # is left as it is.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a previous run's
        self._server = await asyncio.start_unix_server(self._accept, path)
        os.chmod(path, 0o600)
        log.info("nri listening", socket=str(path))

    async def close(self) -> None:
        """Shut every plugin down, stop listening and stop the launched plugins."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(plugin.close() for plugin in list(self._connected)))
        await asyncio.gather(*self._connection_tasks, return_exceptions=True)
        await asyncio.gather(*(process.stop(STOP_GRACE_S) for process in self._processes))
        if self._server is not None:
            await self._server.wait_closed()
            self._settings.socket_path.unlink(missing_ok=True)
            self._server = None

    # -- events ---------------------------------------------------------------------------------

    async def run_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        await self._each("RunPodSandbox", lambda p: p.run_pod_sandbox(pod))

    async def update_pod_sandbox(
        self,
        pod: api_pb2.PodSandbox,
        overhead: api_pb2.LinuxResources | None,
        resources: api_pb2.LinuxResources | None,
    ) -> None:
        await self._each(
            "UpdatePodSandbox", lambda p: p.update_pod_sandbox(pod, overhead, resources)
        )

    async def post_update_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        await self._each("PostUpdatePodSandbox", lambda p: p.post_update_pod_sandbox(pod))

    async def stop_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        await self._each("StopPodSandbox", lambda p: p.stop_pod_sandbox(pod))

    async def remove_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        await self._each("RemovePodSandbox", lambda p: p.remove_pod_sandbox(pod))

    async def create_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> list[tuple[str, api_pb2.CreateContainerResponse]]:
        return await self._each("CreateContainer", lambda p: p.create_container(pod, container))

    async def post_create_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> None:
        await self._each("PostCreateContainer", lambda p: p.post_create_container(pod, container))

    async def start_container(self, pod: api_pb2.PodSandbox, container: api_pb2.Container) -> None:
        await self._each("StartContainer", lambda p: p.start_container(pod, container))

    async def post_start_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> None:
        await self._each("PostStartContainer", lambda p: p.post_start_container(pod, container))

    async def update_container(
        self,
        pod: api_pb2.PodSandbox,
        container: api_pb2.Container,
        resources: api_pb2.LinuxResources | None,
    ) -> list[tuple[str, api_pb2.UpdateContainerResponse]]:
        return await self._each(
            "UpdateContainer", lambda p: p.update_container(pod, container, resources)
        )

    async def post_update_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> None:
        await self._each("PostUpdateContainer", lambda p: p.post_update_container(pod, container))

    async def stop_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> list[tuple[str, api_pb2.StopContainerResponse]]:
        return await self._each("StopContainer", lambda p: p.stop_container(pod, container))

    async def remove_container(self, pod: api_pb2.PodSandbox, container: api_pb2.Container) -> None:
        await self._each("RemoveContainer", lambda p: p.remove_container(pod, container))

    async def validate_container_adjustment(
        self, request: api_pb2.ValidateContainerAdjustmentRequest
    ) -> ValidationRejection | None:
        """The first rejection in index order, or None. Validators are asked all at once, as
        upstream; one that fails or times out rejects (validation fails closed) and, unless it
        answered with an error, is dropped."""
        validators = [
            p for p in self.plugins if p.subscribed(api_pb2.VALIDATE_CONTAINER_ADJUSTMENT)
        ]
        answers = await asyncio.gather(
            *(p.validate_container_adjustment(request) for p in validators),
            return_exceptions=True,
        )
        rejections = []
        for plugin, answer in zip(validators, answers, strict=True):
            if isinstance(answer, PluginFailed):
                self._drop_if_disconnected(plugin, answer)
                rejections.append(ValidationRejection(str(plugin), f"failed: {answer.reason}"))
            elif isinstance(answer, BaseException):
                raise answer
            elif answer is not None and answer.reject:
                reason = answer.reason or "unknown rejection reason"
                rejections.append(ValidationRejection(str(plugin), reason))
        return rejections[0] if rejections else None

    # -- fan-out --------------------------------------------------------------------------------

    async def _each(
        self, event: str, call: Callable[[ConnectedPlugin], Awaitable[_R | None]]
    ) -> list[tuple[str, _R]]:
        replies: list[tuple[str, _R]] = []
        for plugin in self.plugins:
            try:
                reply = await call(plugin)
            except PluginReturnedError:
                raise
            except PluginTimedOut as exc:
                self._drop_if_disconnected(plugin, exc)
                if self._settings.on_plugin_timeout is OnPluginTimeout.FAIL:
                    raise
                log.warning(
                    "nri plugin timed out, proceeding without it", method=event, error=str(exc)
                )
                continue
            except PluginFailed as exc:
                self._drop_if_disconnected(plugin, exc)
                log.warning(
                    "nri plugin failed, proceeding without it", method=event, error=str(exc)
                )
                continue
            if reply is not None:
                replies.append((str(plugin), reply))
        return replies

    def _drop_if_disconnected(self, plugin: ConnectedPlugin, failure: PluginFailed) -> None:
        # The plugin's connection task forgets it too, once it notices; this is sooner.
        if failure.disconnected and plugin in self._plugins:
            self._plugins.remove(plugin)

    # -- plugins coming and going -------------------------------------------------------------

    async def _launch(self, preinstalled: PreinstalledPlugin) -> None:
        identity = preinstalled.identity
        if identity in self._claims:
            log.warning("nri plugin skipped: its index and name are taken", plugin=str(identity))
            return
        try:
            process, ours = PluginProcess.spawn(preinstalled)
        except OSError as exc:
            log.warning("nri plugin not launched", plugin=str(identity), error=str(exc))
            return
        self._processes.append(process)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        plugin = ConnectedPlugin(
            reader,
            writer,
            request_timeout_s=self._settings.request_timeout_s,
            update_containers=self._update_containers,
            launched_as=identity,
            peer=f"launched:{identity}[{process.pid}]",
        )
        self._claims[identity] = plugin
        if await self._bring_up(plugin, preinstalled.config):
            self._spawn_connection_task(self._serve(plugin))
        else:
            await process.stop(STOP_GRACE_S)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, and our own task: asyncio's server would report the task's
        # cancellation as an error.
        if self._closing:
            writer.close()
            return
        plugin: ConnectedPlugin

        def refuse(identity: PluginIdentity) -> str | None:
            holder = self._claims.get(identity)
            if holder is not None and holder.alive:
                return f"a plugin {identity} is already registered"
            self._claims[identity] = plugin
            return None

        plugin = ConnectedPlugin(
            reader,
            writer,
            request_timeout_s=self._settings.request_timeout_s,
            update_containers=self._update_containers,
            refuse=refuse,
            peer="external",
        )

        async def connection() -> None:
            if await self._bring_up(plugin, config=""):
                await self._serve(plugin)

        self._spawn_connection_task(connection())

    async def _bring_up(self, plugin: ConnectedPlugin, config: str) -> bool:
        """Register and synchronize the plugin, then call it for events; False if it failed
        (it is then disconnected)."""
        self._connected.add(plugin)
        try:
            await plugin.register(
                runtime_name=self._runtime_name,
                runtime_version=self._runtime_version,
                config=config,
                registration_timeout_s=self._settings.registration_timeout_s,
            )
            assert plugin.identity is not None
            pods, containers = await self._synchronize()
            updates = await plugin.synchronize(pods, containers)
            if updates:
                failed = await self._update_containers(plugin.identity, updates, ())
                if failed:
                    log.warning(
                        "nri synchronize updates failed", plugin=str(plugin), failed=len(failed)
                    )
        except PluginFailed as exc:
            log.warning("nri plugin not registered", error=str(exc))
            await self._forget(plugin)
            return False
        if self._closing:
            await self._forget(plugin)
            return False
        self._plugins.append(plugin)
        # "<index>-<name>" with its two-digit index sorts as (index, name).
        self._plugins.sort(key=str)
        log.info("nri plugin order", plugins=[str(p) for p in self._plugins])
        return True

    async def _serve(self, plugin: ConnectedPlugin) -> None:
        await plugin.wait_closed()
        await self._forget(plugin)

    async def _forget(self, plugin: ConnectedPlugin) -> None:
        await plugin.close()
        self._connected.discard(plugin)
        if plugin in self._plugins:
            self._plugins.remove(plugin)
        if plugin.identity is not None and self._claims.get(plugin.identity) is plugin:
            del self._claims[plugin.identity]

    def _spawn_connection_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._connection_tasks.add(task)
        task.add_done_callback(self._connection_tasks.discard)
