"""The one server interceptor: it logs, times and counts every call, maps domain errors
to gRPC status codes, so handlers only raise, and answers a unary call only once the state
changes it made are committed to state.db (every mutating RPC is unary)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
import structlog
from google.protobuf.message import DecodeError

from cri.errors import DOMAIN_ERRORS, status_code_for
from cri.startup import StartupGate
from metrics.operations import record_cri_call
from runtime.errors import InvalidArgument, Unimplemented
from runtime.state.db import StateWriteError, WriteTracker, track_writes

log = structlog.get_logger("moorage.cri")

_ID_FIELDS = ("pod_sandbox_id", "container_id")
# Polled every second by kubelet: logged at debug so info stays readable.
_QUIET_PREFIXES = (
    "List",
    "Stream",
    "Version",
    "Status",
    "ImageFsInfo",
    "PodSandboxStatus",
    "ImageStatus",
    "ContainerStatus",
)

if TYPE_CHECKING:
    # Generic only in the type stubs, not at run time.
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    UnaryBehavior: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
    StreamBehavior: TypeAlias = Callable[[Any, Context], Any]


def _object_ids(message: Any) -> dict[str, str]:
    ids: dict[str, str] = {}
    for name in _ID_FIELDS:
        value = getattr(message, name, "")
        if isinstance(value, str) and value:
            ids[name] = value
    return ids


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, startup: StartupGate | None = None) -> None:
        """startup: what calls wait for while the agent recovers; None when it has nothing
        to recover (a server made for one servicer)."""
        self._startup = startup

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler is None:
            # A method no servicer has (a newer CRI than the vendored proto): answered here,
            # so it is logged and counted like any other call.
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, _unknown_method(handler_call_details.method))
            )
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, cast("UnaryBehavior", handler.unary_unary)),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, cast("StreamBehavior", handler.unary_stream)),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, method: str, inner: UnaryBehavior) -> UnaryBehavior:
        async def behavior(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            ids = _object_ids(request)
            with track_writes() as writes:
                try:
                    _check_decoded(request)
                    await self._started(method)
                    response = await inner(request, context)
                    await writes.durable()
                except asyncio.CancelledError:
                    _finish(method, grpc.StatusCode.CANCELLED, started, ids, "client went away")
                    raise
                except Exception as exc:
                    await _undo_saved(writes)
                    code, message = _failure(method, exc)
                else:
                    _finish(method, grpc.StatusCode.OK, started, ids | _object_ids(response))
                    return response
            _finish(method, code, started, ids, message)
            await context.abort(code, message)

        return behavior

    def _stream(
        self, method: str, inner: StreamBehavior
    ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            ids = _object_ids(request)
            try:
                _check_decoded(request)
                await self._started(method)
                produced = inner(request, context)
                if inspect.isawaitable(produced):
                    await produced
                else:
                    try:
                        async for item in produced:
                            yield item
                    finally:
                        # Closed now, not when the collector gets to it: its reads and
                        # buffers go with the call.
                        await produced.aclose()
            except (asyncio.CancelledError, GeneratorExit):
                # A client that cancels while the handler waits to send reaches it as
                # GeneratorExit: gRPC closes the generator instead of cancelling a task.
                _finish(method, grpc.StatusCode.CANCELLED, started, ids, "client went away")
                raise
            except Exception as exc:
                code, message = _failure(method, exc)
            else:
                _finish(method, grpc.StatusCode.OK, started, ids)
                return
            _finish(method, code, started, ids, message)
            await context.abort(code, message)

        return behavior

    async def _started(self, method: str) -> None:
        if self._startup is not None:
            await self._startup.wait_for(method)


async def _undo_saved(writes: WriteTracker) -> None:
    """A failed call answers once the rows its undo removed are gone from state.db too; the
    call's own error is the one to report."""
    with contextlib.suppress(StateWriteError):
        await writes.durable()


def _unknown_method(full_name: str) -> UnaryBehavior:
    async def unknown(request: Any, context: Context) -> Any:
        raise Unimplemented(f"{full_name.lstrip('/')} is not implemented by moorage")

    return unknown


@dataclass(frozen=True)
class _Undecodable:
    error: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A request that does not parse (e.g. a string field that is not UTF-8) reaches the
    handler wrapper as _Undecodable, to be answered INVALID_ARGUMENT, not UNKNOWN."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    return parse


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            f"the request cannot be parsed ({request.error}); string fields must be UTF-8"
        )


def _failure(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, DOMAIN_ERRORS):
        return status_code_for(exc), str(exc)
    log.exception("unexpected error", method=method)
    return grpc.StatusCode.INTERNAL, f"{method}: internal error: {exc!r}"


def _finish(
    method: str,
    code: grpc.StatusCode,
    started: float,
    ids: dict[str, str],
    message: str = "",
) -> None:
    duration_s = time.perf_counter() - started
    record_cri_call(method, code.name, duration_s)
    failed = code is not grpc.StatusCode.OK
    quiet = not failed and method.startswith(_QUIET_PREFIXES)
    # The polled calls are most of all calls: no event built that nobody reads.
    if quiet and not log.bind().is_enabled_for(logging.DEBUG):
        return
    fields: dict[str, Any] = {"method": method, "code": code.name, "ms": round(duration_s * 1e3, 3)}
    fields.update(ids)
    if failed:
        log.warning("cri call failed", error=message, **fields)
    elif quiet:
        log.debug("cri call", **fields)
    else:
        log.info("cri call", **fields)
