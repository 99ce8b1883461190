"""What the streaming server runs for a session, by container or pod id: an exec with the
container's own process settings, an attach through its conmon, a port-forward from inside its
pod's network namespace. The state is checked again here: it may have changed since the RPC."""

from __future__ import annotations

import asyncio

from runtime.containers.bundle import exec_process_spec
from runtime.containers.manager import ContainerManager
from runtime.containers.model import Container, ContainerState
from runtime.errors import FailedPrecondition
from runtime.oci.runtime_cli import OciRuntime
from runtime.pods.manager import SandboxManager
from runtime.pods.model import Sandbox, SandboxState
from runtime.settings import RuntimeSettings
from runtime.streaming.attach import attach
from runtime.streaming.exec import exec_streaming
from runtime.streaming.port_forward import forward_port
from runtime.streaming.streams import PortStream, StdioClient


class StreamingSessions:
    def __init__(
        self,
        settings: RuntimeSettings,
        containers: ContainerManager,
        sandboxes: SandboxManager,
        runtimes: dict[str, OciRuntime],
    ) -> None:
        self.settings = settings
        self.containers = containers
        self.sandboxes = sandboxes
        self.runtimes = runtimes

    def streamable(self, container_id: str) -> Container:
        """A running container in a ready pod: what an Exec or Attach URL is handed out for."""
        container = self._running(container_id)
        self.forwardable(container.sandbox_id)
        return container

    def forwardable(self, sandbox_id: str) -> Sandbox:
        """A ready pod: what a PortForward URL is handed out for."""
        sandbox = self.sandboxes.status(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        return sandbox

    async def exec(self, container_id: str, command: list[str], client: StdioClient) -> int:
        container = self._running(container_id)
        paths = self.settings.layout.container(container.id)
        process = await asyncio.to_thread(exec_process_spec, paths, command, tty=client.tty)
        runtime = self.runtimes[container.runtime_handler]
        return await exec_streaming(runtime, container.id, paths.bundle, process, client)

    async def attach(self, container_id: str, client: StdioClient) -> None:
        container = self._running(container_id)
        layout = self.settings.layout
        await attach(
            layout.attach_socket(container.id),
            layout.container(container.id).ctl,
            client,
            stdin_allowed=container.config.stdin,
        )

    async def forward(self, sandbox_id: str, stream: PortStream) -> None:
        sandbox = self.sandboxes.status(sandbox_id)
        await forward_port(sandbox.netns_path or None, stream)

    def _running(self, container_id: str) -> Container:
        container = self.containers.status(container_id)
        if container.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running")
        return container
