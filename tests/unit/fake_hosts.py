"""Recording fakes of SandboxHost and ContainerHost, so the managers' own logic runs without
root. Every call is recorded as (step, id); a test makes a step fail, or holds it until it
lets it go, to order what runs concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from network.types import PodNetworkRequest
from runtime.containers.build import BuiltContainer
from runtime.containers.model import Container, ImageRuntimeConfig, ProcessUser
from runtime.oci.conmon import ConmonProcess, ExecResult
from runtime.pods.host_work import SandboxObjects
from runtime.pods.model import InfraProcess, Sandbox
from runtime.resources import Resources

# The id a hold or failure matches when it is not for one object in particular.
ANY = "*"

T = TypeVar("T")


class Hold:
    """A step that waits, once, until the test releases it."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def wait_released(self) -> None:
        self.reached.set()
        await self._released.wait()


class RecordingHost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._holds: dict[tuple[str, str], Hold] = {}
        self._failures: dict[tuple[str, str], BaseException] = {}

    def hold(self, step: str, object_id: str = ANY) -> Hold:
        hold = Hold()
        self._holds[step, object_id] = hold
        return hold

    def fail(self, step: str, error: BaseException, object_id: str = ANY) -> None:
        self._failures[step, object_id] = error

    def steps(self, object_id: str) -> list[str]:
        return [step for step, called_for in self.calls if called_for == object_id]

    async def _step(self, step: str, object_id: str) -> None:
        """Recorded once the step is done (held or not), so the order shows what overlapped."""
        hold = self._take(self._holds, step, object_id)
        if hold is not None:
            await hold.wait_released()
        self.calls.append((step, object_id))
        error = self._take(self._failures, step, object_id)
        if error is not None:
            raise error

    @staticmethod
    def _take(table: dict[tuple[str, str], T], step: str, object_id: str) -> T | None:
        found = table.pop((step, object_id), None)
        return found if found is not None else table.pop((step, ANY), None)


class FakeSandboxHost(RecordingHost):
    def __init__(self) -> None:
        super().__init__()
        self.userns = True
        self.ips = ["10.85.0.7"]
        # Sandbox id -> the cgroup limits last written for it.
        self.limits: dict[str, Resources] = {}

    def user_namespaces_supported(self) -> bool:
        return self.userns

    async def build(self, sandbox: Sandbox, sysctl_paths: dict[str, str]) -> SandboxObjects:
        await self._step("build", sandbox.id)
        return SandboxObjects({"net": f"/pins/net/{sandbox.id}"}, InfraProcess(4242, 99))

    async def attach_network(self, request: PodNetworkRequest) -> list[str]:
        await self._step("attach_network", request.sandbox_id)
        return self.ips

    async def detach_network(self, request: PodNetworkRequest) -> None:
        await self._step("detach_network", request.sandbox_id)

    async def update_resources(self, sandbox: Sandbox, limits: Resources) -> None:
        await self._step("update_resources", sandbox.id)
        self.limits[sandbox.id] = limits

    async def stop(self, sandbox: Sandbox) -> None:
        await self._step("stop", sandbox.id)

    async def remove(self, sandbox: Sandbox) -> None:
        await self._step("remove", sandbox.id)


class FakeContainerHost(RecordingHost):
    """A container's process "exits" on SIGKILL, and on other signals unless it ignores
    them, the way conmon's exit file reaches the manager: later, through on_exit."""

    def __init__(self) -> None:
        super().__init__()
        self.on_exit: Callable[[str, int], None] = lambda _id, _code: None
        self.ignores_stop_signal = False
        self.kills: list[tuple[str, int, bool]] = []
        self.updates: list[dict[str, Any]] = []
        self.oom_killed: set[str] = set()
        self.exec_result = ExecResult(0, b"out", b"err", timed_out=False)
        self._next_pid = 100

    async def build(
        self,
        container: Container,
        sandbox: Sandbox,
        image_config: ImageRuntimeConfig,
        lowers: list[Path],
        volumes: dict[int, list[Path]],
    ) -> BuiltContainer:
        await self._step("build", container.id)
        return BuiltContainer(ProcessUser(uid=1000, gid=1000), {"process": {}})

    async def create(self, container: Container) -> ConmonProcess:
        await self._step("create", container.id)
        self._next_pid += 2
        return ConmonProcess(conmon_pid=self._next_pid - 1, pid=self._next_pid)

    async def created(self, container: Container) -> None:
        await self._step("created", container.id)

    async def start(self, container: Container) -> None:
        await self._step("start", container.id)

    async def kill(self, container: Container, signum: int, *, all_processes: bool) -> None:
        await self._step("kill", container.id)
        self.kills.append((container.id, signum, all_processes))
        if all_processes or not self.ignores_stop_signal:
            asyncio.get_running_loop().call_soon(self.on_exit, container.id, 128 + signum)

    async def delete(self, container: Container) -> None:
        await self._step("delete", container.id)

    async def remove_files(self, container_id: str, sandbox: Sandbox | None) -> None:
        await self._step("remove_files", container_id)

    async def update(self, container: Container, resources: dict[str, Any]) -> None:
        await self._step("update", container.id)
        self.updates.append(resources)

    async def reopen_log(self, container: Container) -> None:
        await self._step("reopen_log", container.id)

    async def exec_sync(
        self, container: Container, command: list[str], timeout_s: float, output_cap: int
    ) -> ExecResult:
        await self._step("exec_sync", container.id)
        return self.exec_result

    def oom_kills(self, cgroup_path: str) -> int:
        return 1 if cgroup_path.rsplit("/", 1)[-1] in self.oom_killed else 0
