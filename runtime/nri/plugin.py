"""One NRI plugin connected to the runtime, from registration to disconnection.

Over the plugin's unix-socket connection runs NRI's multiplexer (runtime/nri/mux.py): on
RUNTIME_SERVICE_CONN we serve the Runtime service (RegisterPlugin, UpdateContainers), on
PLUGIN_SERVICE_CONN we call the plugin's Plugin service. Registration is upstream's handshake:
the plugin sends RegisterPlugin within the registration timeout, we Configure it (its answer is
the events it subscribes to), then Synchronize it with the pods and containers that exist.

Every call is bounded by the request timeout. A plugin that times out, breaks the protocol or
whose connection ends is disconnected: its later answers could not be trusted to come, or to
mean anything. Calls raise nothing but PluginFailed (and its kinds), so that the owner decides,
per operation, whether a plugin's failure fails it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import structlog
from google.protobuf.message import DecodeError, Message

from runtime.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from runtime.nri.proto import api_pb2
from runtime.nri.streams import ByteReader, ByteWriter
from runtime.nri.ttrpc import (
    MAX_MESSAGE_LENGTH,
    StatusCode,
    TtrpcConnection,
    TtrpcConnectionClosed,
    TtrpcError,
)

log = structlog.get_logger("moorage.nri")

PLUGIN_SERVICE = api_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name
RUNTIME_SERVICE = api_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name
# What Configure tells plugins: `git describe` of the containerd/nri commit api.proto is from.
NRI_VERSION = "v0.12.2-31-g8ec8b28"
# Bit n-1 of an event mask stands for the Event numbered n; LAST is one past the last event.
ALL_EVENTS = (1 << (api_pb2.LAST - 1)) - 1
# A Synchronize request's pods and containers, encoded, stay under this, so that the ttrpc
# envelope around them fits in one message; more go in further requests.
SYNC_CHUNK_BYTES = MAX_MESSAGE_LENGTH - 64 * 1024

_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
_M = TypeVar("_M", bound=Message)
Event: TypeAlias = api_pb2.Event.ValueType


def event_bit(event: Event) -> int:
    return 1 << (event - 1)


def event_mask(*events: Event) -> int:
    mask = 0
    for event in events:
        mask |= event_bit(event)
    return mask


@dataclass(frozen=True, order=True)
class PluginIdentity:
    """A plugin as it registers: plugins are called in ascending index order, and by name
    among equal indices."""

    index: str
    name: str

    def __post_init__(self) -> None:
        # As upstream's CheckPluginIndex and CheckPluginName: two ASCII digits, and a name
        # that is safe in a file name and a log line.
        if len(self.index) != 2 or not all("0" <= c <= "9" for c in self.index):
            raise ValueError(f"invalid NRI plugin index {self.index!r}: two digits expected")
        if not _PLUGIN_NAME.fullmatch(self.name):
            raise ValueError(f"invalid NRI plugin name {self.name!r}: [A-Za-z0-9_.+-]+ expected")

    @classmethod
    def from_file_name(cls, file_name: str) -> PluginIdentity:
        """The identity in a pre-installed plugin's file name, "<index>-<name>"."""
        index, dash, name = file_name.partition("-")
        if not dash:
            raise ValueError(f"invalid NRI plugin file name {file_name!r}: <index>-<name> expected")
        return cls(index, name)

    def __str__(self) -> str:
        return f"{self.index}-{self.name}"


class PluginFailed(Exception):
    """A call to a plugin did not succeed. Unless it is a PluginReturnedError, the plugin has
    been disconnected for it."""

    disconnected = True

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"NRI plugin {plugin}: {reason}")
        self.plugin = plugin
        self.reason = reason


class PluginTimedOut(PluginFailed):
    """The plugin did not answer within its timeout."""


class PluginReturnedError(PluginFailed):
    """The plugin answered with an error status; it stays connected."""

    disconnected = False

    def __init__(self, plugin: str, method: str, error: TtrpcError) -> None:
        super().__init__(plugin, f"{method} failed: {error}")
        self.code = error.code


# A plugin's unsolicited UpdateContainers: (the plugin, updates, evictions) -> failed updates.
UpdateContainers = Callable[
    [PluginIdentity, Sequence[api_pb2.ContainerUpdate], Sequence[api_pb2.ContainerEviction]],
    Awaitable[Sequence[api_pb2.ContainerUpdate]],
]
# Why a registering plugin is refused (its identity is taken, say), or None to admit it.
RefuseRegistration = Callable[[PluginIdentity], str | None]

# Events that plugins built on an older NRI stub take only as StateChange, as upstream funnels.
_STATE_CHANGE_FALLBACK = frozenset(
    {
        api_pb2.RUN_POD_SANDBOX,
        api_pb2.POST_UPDATE_POD_SANDBOX,
        api_pb2.STOP_POD_SANDBOX,
        api_pb2.REMOVE_POD_SANDBOX,
        api_pb2.POST_CREATE_CONTAINER,
        api_pb2.START_CONTAINER,
        api_pb2.POST_START_CONTAINER,
        api_pb2.POST_UPDATE_CONTAINER,
        api_pb2.REMOVE_CONTAINER,
    }
)


class ConnectedPlugin:
    """A plugin on an accepted (or pre-connected) unix stream. `register()` it, then call its
    per-event methods: each sends its request only if the plugin subscribed to the event, and
    returns the plugin's decoded answer (None when not subscribed). `close()` it at the end;
    `wait_closed()` waits until it is disconnected, whoever disconnected it."""

    def __init__(
        self,
        reader: ByteReader,
        writer: ByteWriter,
        *,
        request_timeout_s: float,
        update_containers: UpdateContainers,
        refuse: RefuseRegistration | None = None,
        launched_as: PluginIdentity | None = None,
        peer: str = "plugin",
    ) -> None:
        self.identity: PluginIdentity | None = launched_as
        """Known once registered; a launched plugin's is its file name's, whatever it sends."""
        self.events = 0
        """The subscribed event mask, known once configured."""
        self._launched = launched_as is not None
        self._request_timeout_s = request_timeout_s
        self._update_containers_callback = update_containers
        self._refuse = refuse
        self._peer = peer
        self._log = log.bind(peer=peer)
        self._mux = Mux(reader, writer, peer=peer)
        to_plugin = self._mux.open(PLUGIN_SERVICE_CONN)
        from_plugin = self._mux.open(RUNTIME_SERVICE_CONN)
        self._calls = TtrpcConnection(to_plugin, to_plugin, peer=peer)
        self._service = TtrpcConnection(
            from_plugin,
            from_plugin,
            {
                (RUNTIME_SERVICE, "RegisterPlugin"): self._register_plugin,
                (RUNTIME_SERVICE, "UpdateContainers"): self._update_containers,
            },
            peer=peer,
        )
        self._registration: asyncio.Future[PluginIdentity] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._state_change_events: set[Event] = set()
        self._disconnected = False

    def __str__(self) -> str:
        return str(self.identity) if self.identity else self._peer

    @property
    def alive(self) -> bool:
        return not self._disconnected

    def subscribed(self, event: Event) -> bool:
        return bool(self.events & event_bit(event))

    # -- registration ---------------------------------------------------------------------------

    async def register(
        self,
        *,
        runtime_name: str,
        runtime_version: str,
        config: str = "",
        registration_timeout_s: float,
    ) -> None:
        """Wait for the plugin's RegisterPlugin, then Configure it with `config`. Raises
        PluginFailed (the plugin is then disconnected) if either does not happen in time or
        the plugin is refused."""
        self._registration = asyncio.get_running_loop().create_future()
        self._mux.start()
        self._calls.start()
        self._service.start()
        self._watch = asyncio.create_task(self._watch_connection())
        await asyncio.wait(
            (self._registration, self._watch),
            timeout=registration_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not self._registration.done():
            self._registration.cancel()
            if self._watch.done():
                raise PluginFailed(str(self), "disconnected before registering")
            await self._disconnect("did not register in time")
            raise PluginTimedOut(str(self), f"no RegisterPlugin within {registration_timeout_s}s")
        try:
            self.identity = self._registration.result()
        except PluginFailed:
            await self._disconnect("registration refused")
            raise
        self._log = log.bind(plugin=self.identity.name, index=self.identity.index)
        request = api_pb2.ConfigureRequest(
            config=config,
            runtime_name=runtime_name,
            runtime_version=runtime_version,
            registration_timeout=int(registration_timeout_s * 1000),
            request_timeout=int(self._request_timeout_s * 1000),
            NRI_version=NRI_VERSION,
        )
        reply = await self._call("Configure", request, api_pb2.ConfigureResponse)
        # As upstream: a plugin that names no events gets them all.
        events = reply.events or ALL_EVENTS
        if events & ~ALL_EVENTS:
            await self._disconnect("subscribed to unknown events")
            raise PluginFailed(str(self), f"subscribed to unknown events {events:#x}")
        self.events = events
        self._log.info("nri plugin registered", events=f"{events:#x}")

    async def synchronize(
        self,
        pods: Sequence[api_pb2.PodSandbox],
        containers: Sequence[api_pb2.Container],
        *,
        chunk_bytes: int = SYNC_CHUNK_BYTES,
    ) -> list[api_pb2.ContainerUpdate]:
        """Send the existing pods and containers, in several requests if they are large, and
        return the updates the plugin asks for in answer."""
        chunks = _sync_chunks(pods, containers, chunk_bytes)
        for number, request in enumerate(chunks, start=1):
            reply = await self._call("Synchronize", request, api_pb2.SynchronizeResponse)
            if number == len(chunks):
                return list(reply.update)
            # A plugin that takes a split synchronization says `more` back, and waits for the
            # last part to answer with updates, as upstream's stub does.
            if not reply.more or reply.update:
                await self._disconnect("does not take a split Synchronize")
                raise PluginFailed(str(self), "does not handle split Synchronize requests")
        raise AssertionError("no Synchronize chunks")  # _sync_chunks yields at least one

    # -- events ---------------------------------------------------------------------------------

    async def run_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        request = api_pb2.RunPodSandboxRequest(pod=pod)
        await self._notify(api_pb2.RUN_POD_SANDBOX, "RunPodSandbox", request, pod)

    async def update_pod_sandbox(
        self,
        pod: api_pb2.PodSandbox,
        overhead: api_pb2.LinuxResources | None,
        resources: api_pb2.LinuxResources | None,
    ) -> None:
        request = api_pb2.UpdatePodSandboxRequest(
            pod=pod, overhead_linux_resources=overhead, linux_resources=resources
        )
        await self._notify(api_pb2.UPDATE_POD_SANDBOX, "UpdatePodSandbox", request, pod)

    async def post_update_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        request = api_pb2.PostUpdatePodSandboxRequest(pod=pod)
        await self._notify(api_pb2.POST_UPDATE_POD_SANDBOX, "PostUpdatePodSandbox", request, pod)

    async def stop_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        request = api_pb2.StopPodSandboxRequest(pod=pod)
        await self._notify(api_pb2.STOP_POD_SANDBOX, "StopPodSandbox", request, pod)

    async def remove_pod_sandbox(self, pod: api_pb2.PodSandbox) -> None:
        request = api_pb2.RemovePodSandboxRequest(pod=pod)
        await self._notify(api_pb2.REMOVE_POD_SANDBOX, "RemovePodSandbox", request, pod)

    async def create_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> api_pb2.CreateContainerResponse | None:
        if not self.subscribed(api_pb2.CREATE_CONTAINER):
            return None
        request = api_pb2.CreateContainerRequest(pod=pod, container=container)
        return await self._call("CreateContainer", request, api_pb2.CreateContainerResponse)

    async def post_create_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> None:
        request = api_pb2.PostCreateContainerRequest(pod=pod, container=container)
        await self._notify(
            api_pb2.POST_CREATE_CONTAINER, "PostCreateContainer", request, pod, container
        )

    async def start_container(self, pod: api_pb2.PodSandbox, container: api_pb2.Container) -> None:
        request = api_pb2.StartContainerRequest(pod=pod, container=container)
        await self._notify(api_pb2.START_CONTAINER, "StartContainer", request, pod, container)

    async def post_start_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> None:
        request = api_pb2.PostStartContainerRequest(pod=pod, container=container)
        await self._notify(
            api_pb2.POST_START_CONTAINER, "PostStartContainer", request, pod, container
        )

    async def update_container(
        self,
        pod: api_pb2.PodSandbox,
        container: api_pb2.Container,
        resources: api_pb2.LinuxResources | None,
    ) -> api_pb2.UpdateContainerResponse | None:
        if not self.subscribed(api_pb2.UPDATE_CONTAINER):
            return None
        request = api_pb2.UpdateContainerRequest(
            pod=pod, container=container, linux_resources=resources
        )
        return await self._call("UpdateContainer", request, api_pb2.UpdateContainerResponse)

    async def post_update_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> None:
        request = api_pb2.PostUpdateContainerRequest(pod=pod, container=container)
        await self._notify(
            api_pb2.POST_UPDATE_CONTAINER, "PostUpdateContainer", request, pod, container
        )

    async def stop_container(
        self, pod: api_pb2.PodSandbox, container: api_pb2.Container
    ) -> api_pb2.StopContainerResponse | None:
        if not self.subscribed(api_pb2.STOP_CONTAINER):
            return None
        request = api_pb2.StopContainerRequest(pod=pod, container=container)
        return await self._call("StopContainer", request, api_pb2.StopContainerResponse)

    async def remove_container(self, pod: api_pb2.PodSandbox, container: api_pb2.Container) -> None:
        request = api_pb2.RemoveContainerRequest(pod=pod, container=container)
        await self._notify(api_pb2.REMOVE_CONTAINER, "RemoveContainer", request, pod, container)

    async def validate_container_adjustment(
        self, request: api_pb2.ValidateContainerAdjustmentRequest
    ) -> api_pb2.ValidateContainerAdjustmentResponse | None:
        if not self.subscribed(api_pb2.VALIDATE_CONTAINER_ADJUSTMENT):
            return None
        return await self._call(
            "ValidateContainerAdjustment", request, api_pb2.ValidateContainerAdjustmentResponse
        )

    # -- the end --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Tell a live plugin to shut down (bounded by the request timeout), then disconnect
        it; idempotent."""
        if self.alive and self.identity is not None and self._watch is not None:
            try:
                await self._call("Shutdown", api_pb2.Empty(), api_pb2.Empty)
            except PluginFailed as exc:
                self._log.info("nri plugin did not take Shutdown", error=str(exc))
        await self._disconnect(None)

    async def wait_closed(self) -> None:
        if self._watch is not None:
            await asyncio.shield(self._watch)

    # -- internals ------------------------------------------------------------------------------

    async def _notify(
        self,
        event: Event,
        method: str,
        request: Message,
        pod: api_pb2.PodSandbox,
        container: api_pb2.Container | None = None,
    ) -> None:
        """An event whose answer carries nothing."""
        if not self.subscribed(event):
            return
        if event not in self._state_change_events:
            try:
                await self._call(method, request, api_pb2.Empty)
                return
            except PluginReturnedError as exc:
                if exc.code != StatusCode.UNIMPLEMENTED or event not in _STATE_CHANGE_FALLBACK:
                    raise
            self._log.warning("nri plugin takes the deprecated StateChange", method=method)
            self._state_change_events.add(event)
        state_change = api_pb2.StateChangeEvent(event=event, pod=pod, container=container)
        await self._call("StateChange", state_change, api_pb2.Empty)

    async def _call(self, method: str, request: Message, reply_type: type[_M]) -> _M:
        if not self.alive:
            raise PluginFailed(str(self), f"{method}: disconnected")
        try:
            payload = await self._calls.call(
                PLUGIN_SERVICE,
                method,
                request.SerializeToString(),
                timeout_s=self._request_timeout_s,
            )
        except TimeoutError:
            await self._disconnect(f"{method} timed out")
            raise PluginTimedOut(
                str(self), f"no answer to {method} within {self._request_timeout_s}s"
            ) from None
        except TtrpcConnectionClosed as exc:
            await self._disconnect(f"connection closed during {method}")
            raise PluginFailed(str(self), f"{method}: {exc}") from exc
        except TtrpcError as exc:
            if exc.code != StatusCode.DEADLINE_EXCEEDED:
                raise PluginReturnedError(str(self), method, exc) from exc
            # The plugin's side of our deadline passed first: the same timeout.
            await self._disconnect(f"{method} timed out")
            raise PluginTimedOut(str(self), f"{method}: {exc.message}") from None
        try:
            return reply_type.FromString(payload)
        except DecodeError as exc:
            await self._disconnect(f"undecodable {method} answer")
            raise PluginFailed(str(self), f"undecodable answer to {method}: {exc}") from exc

    async def _register_plugin(self, payload: bytes) -> bytes:
        request = api_pb2.RegisterPluginRequest.FromString(payload)
        if self._registration is None or self._registration.done():
            raise TtrpcError(StatusCode.FAILED_PRECONDITION, "plugin already registered")
        try:
            claimed = PluginIdentity(request.plugin_idx, request.plugin_name)
        except ValueError as exc:
            self._registration.set_exception(PluginFailed(self._peer, str(exc)))
            raise TtrpcError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        # A launched plugin is who its file name says, as upstream, whatever it claims.
        identity = self.identity if self._launched and self.identity else claimed
        refusal = self._refuse(identity) if self._refuse else None
        if refusal is not None:
            self._registration.set_exception(PluginFailed(str(identity), refusal))
            raise TtrpcError(StatusCode.ALREADY_EXISTS, refusal)
        log.info(
            "nri plugin registering",
            plugin=identity.name,
            index=identity.index,
            nri_version=request.NRI_version or "unknown",
            launched=self._launched,
        )
        self._registration.set_result(identity)
        return api_pb2.Empty().SerializeToString()

    async def _update_containers(self, payload: bytes) -> bytes:
        if self._registration is None or not self._registration.done() or not self.identity:
            raise TtrpcError(StatusCode.FAILED_PRECONDITION, "plugin not registered")
        request = api_pb2.UpdateContainersRequest.FromString(payload)
        self._log.info(
            "nri plugin asks for container updates",
            updates=len(request.update),
            evictions=len(request.evict),
        )
        failed = await self._update_containers_callback(
            self.identity, list(request.update), list(request.evict)
        )
        return api_pb2.UpdateContainersResponse(failed=failed).SerializeToString()

    async def _watch_connection(self) -> None:
        """Ends when the plugin is disconnected: when either ttrpc conversation or the trunk
        beneath them ends, the other cannot go on alone."""
        ends = [
            asyncio.ensure_future(c.wait_closed()) for c in (self._mux, self._calls, self._service)
        ]
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for end in ends:
                end.cancel()
        error = self._mux.error or self._calls.error or self._service.error
        if not self._disconnected:
            self._log.info("nri plugin disconnected", error=str(error) if error else None)
        self._disconnected = True
        await self._calls.close()
        await self._service.close()
        await self._mux.close()

    async def _disconnect(self, why: str | None) -> None:
        if why is not None and not self._disconnected:
            self._log.warning("nri plugin dropped", reason=why)
        self._disconnected = True
        await self._mux.close()
        await self.wait_closed()


def _sync_chunks(
    pods: Sequence[api_pb2.PodSandbox], containers: Sequence[api_pb2.Container], chunk_bytes: int
) -> list[api_pb2.SynchronizeRequest]:
    """Pods, then containers, in requests of at most about chunk_bytes each (an object larger
    than that goes alone); all but the last say there is `more`."""
    chunks = [api_pb2.SynchronizeRequest()]
    size = 0
    for field, objects in (("pods", pods), ("containers", containers)):
        for obj in objects:
            # An object's length prefix and field tag cost at most 6 bytes more.
            obj_size = obj.ByteSize() + 6
            if size and size + obj_size > chunk_bytes:
                chunks.append(api_pb2.SynchronizeRequest())
                size = 0
            getattr(chunks[-1], field).append(obj)
            size += obj_size
    for chunk in chunks[:-1]:
        chunk.more = True
    return chunks
