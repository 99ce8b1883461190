"""A scriptable NRI plugin, on our own ttrpc and multiplexer, for tests of the runtime's side.

It registers, subscribes to the events it is given, records every request, answers
CreateContainer with a given adjustment, and on request misbehaves: hangs (never answers a
method), crashes (drops the connection when a method comes) or sends garbage (junk bytes on the
trunk). It can also ask for unsolicited container updates.

In-process (unit tests): `StubPlugin(behaviour)`, then `await plugin.connect(path)`.
As a program: `python -m tests.nri_plugin --socket PATH --name N --index NN ...`; without
--socket it uses the pre-connected socket whose fd NRI_PLUGIN_SOCKET names, and NRI_PLUGIN_NAME
and NRI_PLUGIN_IDX, as upstream's stub does when the runtime launches it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from runtime.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from runtime.nri.plugin import PLUGIN_SERVICE, RUNTIME_SERVICE, event_mask
from runtime.nri.proto import api_pb2
from runtime.nri.ttrpc import TtrpcConnection

GARBAGE = b"\xff" * 16  # a trunk header announcing a 4 GiB frame: no multiplexer reads it


@dataclass(frozen=True)
class PluginBehaviour:
    name: str = "test"
    index: str = "10"
    events: int = 0  # what Configure answers; 0 subscribes to everything, as upstream
    register: bool = True
    adjustment: api_pb2.ContainerAdjustment | None = None
    sync_updates: Sequence[api_pb2.ContainerUpdate] = ()
    reject_validation: str | None = None
    hang_on: frozenset[str] = frozenset()
    crash_on: frozenset[str] = frozenset()
    garbage_on: frozenset[str] = frozenset()
    # Program mode: every request goes here too, one JSON object a line.
    record_path: Path | None = None
    # Program mode: once synchronized, ask for updates to these containers.
    update_after_sync: Sequence[str] = ()


@dataclass
class StubPlugin:
    behaviour: PluginBehaviour = field(default_factory=PluginBehaviour)
    requests: list[tuple[str, Message]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.synchronized = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._mux: Mux | None = None
        self._calls: TtrpcConnection | None = None
        self._service: TtrpcConnection | None = None
        self._background: set[asyncio.Task[None]] = set()

    def methods(self) -> list[str]:
        return [method for method, _ in self.requests]

    def received(self, method: str) -> list[Message]:
        return [request for name, request in self.requests if name == method]

    async def connect(self, socket_path: Path) -> None:
        await self.run_on(*await asyncio.open_unix_connection(socket_path))

    async def run_on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve the Plugin service on this trunk and register, unless told not to."""
        self._writer = writer
        self._mux = Mux(reader, writer, peer="runtime")
        service_conn = self._mux.open(PLUGIN_SERVICE_CONN)
        calls_conn = self._mux.open(RUNTIME_SERVICE_CONN)
        self._service = TtrpcConnection(service_conn, service_conn, self._handlers())
        self._calls = TtrpcConnection(calls_conn, calls_conn, peer="runtime")
        self._mux.start()
        self._service.start()
        self._calls.start()
        if self.behaviour.register:
            registration = api_pb2.RegisterPluginRequest(
                plugin_name=self.behaviour.name,
                plugin_idx=self.behaviour.index,
                NRI_version="test",
            )
            await self._calls.call(
                RUNTIME_SERVICE, "RegisterPlugin", registration.SerializeToString(), timeout_s=5
            )

    async def update_containers(
        self,
        updates: Sequence[api_pb2.ContainerUpdate],
        evictions: Sequence[api_pb2.ContainerEviction] = (),
    ) -> api_pb2.UpdateContainersResponse:
        assert self._calls is not None, "not connected"
        request = api_pb2.UpdateContainersRequest(update=updates, evict=evictions)
        answer = await self._calls.call(
            RUNTIME_SERVICE, "UpdateContainers", request.SerializeToString(), timeout_s=5
        )
        return api_pb2.UpdateContainersResponse.FromString(answer)

    async def close(self) -> None:
        if self._mux is not None:
            await self._mux.close()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        for end in (self._mux, self._service, self._calls):
            if end is not None:
                await end.wait_closed()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- answering ------------------------------------------------------------------------------

    def _handlers(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[bytes]]]:
        methods = api_pb2.DESCRIPTOR.services_by_name["Plugin"].methods
        return {(PLUGIN_SERVICE, m.name): self._handler(m.name, m.input_type.name) for m in methods}

    def _handler(self, method: str, request_type: str) -> Callable[[bytes], Awaitable[bytes]]:
        message_class: type[Message] = getattr(api_pb2, request_type)

        async def handle(payload: bytes) -> bytes:
            request = message_class.FromString(payload)
            self.requests.append((method, request))
            self._record(method, request)
            if method in self.behaviour.crash_on:
                assert self._mux is not None
                self._spawn(self._mux.close())
                await asyncio.Event().wait()
            if method in self.behaviour.garbage_on:
                assert self._writer is not None
                self._writer.write(GARBAGE)
                await asyncio.Event().wait()
            if method in self.behaviour.hang_on:
                await asyncio.Event().wait()
            return self._answer(method, request).SerializeToString()

        return handle

    def _answer(self, method: str, request: Message) -> Message:
        behaviour = self.behaviour
        match method, request:
            case "Configure", _:
                return api_pb2.ConfigureResponse(events=behaviour.events)
            case "Synchronize", api_pb2.SynchronizeRequest(more=True):
                return api_pb2.SynchronizeResponse(more=True)
            case "Synchronize", _:
                self.synchronized.set()
                if behaviour.update_after_sync:
                    updates = [
                        api_pb2.ContainerUpdate(container_id=c) for c in behaviour.update_after_sync
                    ]
                    self._spawn(self._update_quietly(updates))
                return api_pb2.SynchronizeResponse(update=behaviour.sync_updates)
            case "CreateContainer", _:
                return api_pb2.CreateContainerResponse(adjust=behaviour.adjustment)
            case "ValidateContainerAdjustment", _ if behaviour.reject_validation is not None:
                return api_pb2.ValidateContainerAdjustmentResponse(
                    reject=True, reason=behaviour.reject_validation
                )
        return api_pb2.Empty()

    async def _update_quietly(self, updates: Sequence[api_pb2.ContainerUpdate]) -> None:
        answer = await self.update_containers(updates)
        self._record("UpdateContainers answered", answer)

    def _record(self, method: str, message: Message) -> None:
        if self.behaviour.record_path is not None:
            line = {"method": method, "message": json_format.MessageToDict(message)}
            with self.behaviour.record_path.open("a") as record:
                record.write(json.dumps(line) + "\n")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


# -- program mode ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[Path | None, PluginBehaviour]:
    parser = argparse.ArgumentParser(prog="python -m tests.nri_plugin")
    parser.add_argument("--socket", type=Path, help="the runtime's NRI socket to connect to")
    parser.add_argument("--name", default=os.environ.get("NRI_PLUGIN_NAME", "test"))
    parser.add_argument("--index", default=os.environ.get("NRI_PLUGIN_IDX", "10"))
    parser.add_argument("--events", default="", help="comma-separated Event names; none: all")
    parser.add_argument("--adjust-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--hang", action="append", default=[], metavar="METHOD")
    parser.add_argument("--crash", action="append", default=[], metavar="METHOD")
    parser.add_argument("--garbage", action="append", default=[], metavar="METHOD")
    parser.add_argument("--record", type=Path, help="append each request here as JSON")
    parser.add_argument("--update-after-sync", action="append", default=[], metavar="CONTAINER")
    args = parser.parse_args(argv)
    events = [api_pb2.Event.Value(name.strip()) for name in args.events.split(",") if name]
    adjustment = None
    if args.adjust_env:
        pairs = [item.partition("=") for item in args.adjust_env]
        adjustment = api_pb2.ContainerAdjustment(
            env=[api_pb2.KeyValue(key=key, value=value) for key, _, value in pairs]
        )
    behaviour = PluginBehaviour(
        name=args.name,
        index=args.index,
        events=event_mask(*events),
        adjustment=adjustment,
        hang_on=frozenset(args.hang),
        crash_on=frozenset(args.crash),
        garbage_on=frozenset(args.garbage),
        record_path=args.record,
        update_after_sync=tuple(args.update_after_sync),
    )
    return args.socket, behaviour


async def run_program(socket_path: Path | None, behaviour: PluginBehaviour) -> None:
    """Serve until the runtime disconnects."""
    plugin = StubPlugin(behaviour)
    if socket_path is not None:
        await plugin.connect(socket_path)
    else:
        inherited = socket.socket(fileno=int(os.environ["NRI_PLUGIN_SOCKET"]))
        await plugin.run_on(*await asyncio.open_unix_connection(sock=inherited))
    await plugin.wait_closed()


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run_program(*parse_args(argv)))


if __name__ == "__main__":
    main()
