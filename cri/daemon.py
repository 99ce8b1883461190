"""`moorage serve`: wiring the runtime to the gRPC server on the unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import structlog

from cri.config import Config, ConfigError
from cri.image_service import ImageService
from cri.interceptor import CallInterceptor
from cri.metrics_wiring import AgentMetrics
from cri.proto import api_pb2_grpc
from cri.runtime_service import RuntimeService
from cri.startup import StartupGate
from cri.streaming.server import StreamingServer
from network.errors import NetworkError
from runtime.agent import Runtime
from runtime.layout import Layout

log = structlog.get_logger("moorage.daemon")

# Enough for a burst of pod starts on a small node; netlink and mounts are short.
WORKER_THREADS = 16
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@contextlib.contextmanager
def exclusive_root(layout: Layout) -> Iterator[None]:
    """One agent per root dir: two would fight over state.db and the pins."""
    layout.root_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another moorage agent is using {layout.root_dir}") from None
        yield
    finally:
        os.close(fd)


def _claim_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise ConfigError(f"socket {path} is served by another process")


async def serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="moorage-worker")
    )
    with exclusive_root(config.runtime.layout):
        runtime = await asyncio.to_thread(Runtime, config.runtime)
        try:
            return await _serve_grpc(config, runtime)
        finally:
            runtime.close()


async def _recover(runtime: Runtime, startup: StartupGate) -> None:
    """The start-up work calls wait for: run once the socket is up, so a restart serves
    within a fraction of a second and each call waits only for what it needs."""
    for fix in await runtime.recover_state():
        log.info("recovered", fix=fix)
    runtime.watch_exits()
    startup.state_recovered.set()
    try:
        for fix in await runtime.recover_network():
            log.info("recovered", fix=fix)
    except NetworkError as exc:
        # Served anyway: Status reports NetworkReady false with the cause.
        log.warning("pod network not ready", error=str(exc))
    for fix in await runtime.recover_images():
        log.info("recovered", fix=fix)
    runtime.layer_usage.start()
    startup.recovered.set()


async def _serve_grpc(config: Config, runtime: Runtime) -> int:
    startup = StartupGate()
    server = grpc.aio.server(
        interceptors=[CallInterceptor(startup)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    streaming = StreamingServer(config.streaming_address, runtime.streams)
    try:
        await streaming.start()
    except OSError as exc:
        raise ConfigError(f"streaming.address {config.streaming_address!r}: {exc}") from None
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(
        RuntimeService(runtime, config, streaming), server
    )
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageService(runtime, config), server)
    _claim_socket(config.socket)
    if server.add_insecure_port(f"unix://{config.socket}") == 0:
        raise ConfigError(f"cannot listen on {config.socket}")
    metrics = AgentMetrics(runtime)
    try:
        metrics.start(config.metrics_address)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"metrics.address {config.metrics_address!r}: {exc}") from None
    await server.start()
    os.chmod(config.socket, 0o660)
    recovery = asyncio.create_task(_recover(runtime, startup))

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info(
        "serving",
        socket=str(config.socket),
        root_dir=str(config.runtime.root_dir),
        run_dir=str(config.runtime.run_dir),
        cgroups=runtime.cgroups.mode.value,
        pods=len(runtime.sandboxes.select()),
        pid=os.getpid(),
    )
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait((stop, recovery), return_when=asyncio.FIRST_COMPLETED)
    if not recovery.done() or recovery.exception() is None:
        await stop
    log.info("stopping: no new calls, in-flight calls may finish", grace_s=config.shutdown_grace_s)
    stop.cancel()
    await server.stop(config.shutdown_grace_s)
    await streaming.close()
    # Its threads use the database that closes next; an agent that could not reconcile
    # fails here, as it did when recovery ran before serving.
    await recovery
    await runtime.containers.drain()
    await runtime.sandboxes.drain()
    await runtime.images.close()
    await runtime.layer_usage.close()
    await metrics.close()
    config.socket.unlink(missing_ok=True)
    log.info("stopped; pods and containers are left running")
    return 0
