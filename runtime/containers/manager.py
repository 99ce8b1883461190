"""Container lifecycle: the async edge over the rootfs, the OCI spec, conmon and the runtime.

Like sandbox mutations, container mutations are shielded from the caller's cancellation and
serialised per container. Exits arrive from the exit watcher (conmon's exit files), never by
polling; a stop waits for that event.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import structlog

from runtime.containers.build import (
    log_path as container_log_path,
)
from runtime.containers.build import own_oom_score_adj, signal_number, validate
from runtime.containers.events import ContainerEvent, EventBus, EventKind
from runtime.containers.exit_recorder import ExitRecorder
from runtime.containers.host_work import ContainerHost
from runtime.containers.image_user import parse_image_config
from runtime.containers.model import (
    Container,
    ContainerConfig,
    ContainerFilter,
    ContainerState,
    ImageRuntimeConfig,
)
from runtime.errors import (
    ContainerRuntimeFailed,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from runtime.images.manager import ImageManager
from runtime.in_flight import InFlight, KeyedLocks
from runtime.oci.conmon import (
    ConmonError,
)
from runtime.oci.exit_files import exit_recorded
from runtime.oci.runtime_cli import OciRuntimeError
from runtime.oci.spec import resources_to_oci
from runtime.pods.model import Sandbox, SandboxState
from runtime.resource_limits import check_resources
from runtime.resources import Resources
from runtime.settings import RuntimeSettings
from runtime.state.container_store import ContainerStore, reserved_name
from runtime.state.sandbox_store import SandboxStore

log = structlog.get_logger("moorage.container")

EXEC_OUTPUT_CAP = 16 * 1024 * 1024
# After SIGKILL the exit file follows within milliseconds; past this something is wrong.
KILL_WAIT_S = 10.0


class ContainerManager:
    def __init__(
        self,
        settings: RuntimeSettings,
        store: ContainerStore,
        sandboxes: SandboxStore,
        images: ImageManager,
        host: ContainerHost,
    ) -> None:
        self.settings = settings
        self.layout = settings.layout
        self.store = store
        self.sandboxes = sandboxes
        self.images = images
        self.host = host
        self.events = EventBus()
        self._locks = KeyedLocks()
        self._exited: dict[str, asyncio.Event] = {}
        self._in_flight = InFlight()
        self._image_configs: dict[str, ImageRuntimeConfig] = {}
        # Removed containers whose host clean-up is under way: id -> (sandbox id, task).
        self._cleanups: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._exits = ExitRecorder(store, sandboxes, host.oom_kills)
        images.in_use = self.image_ids_in_use
        images.removals_settled = self.removals_settled

    # -- queries ------------------------------------------------------------------------

    def status(self, id_or_prefix: str) -> Container:
        return self.store.get(id_or_prefix)

    def select(self, flt: ContainerFilter | None = None) -> list[Container]:
        return self.store.select(flt)

    def all(self) -> list[Container]:
        """Every row, half-created ones included, copied in one step: a metrics scrape calls
        this from its own thread while the event loop changes the store."""
        return self.store.all()

    def image_ids_in_use(self) -> set[str]:
        return {i for c in self.store.all() for i in (c.image_id, *c.volume_images.values())}

    # -- mutations ----------------------------------------------------------------------

    async def create(self, sandbox_id: str, config: ContainerConfig) -> Container:
        return await self._in_flight.run(self._create(sandbox_id, config))

    async def start(self, id_or_prefix: str) -> None:
        await self._in_flight.run(self._start(id_or_prefix))

    async def stop(self, id_or_prefix: str, timeout_s: float) -> None:
        await self._in_flight.run(self._stop(id_or_prefix, timeout_s))

    async def remove(self, id_or_prefix: str) -> None:
        await self._in_flight.run(self._remove(id_or_prefix))

    async def stop_all(self, sandbox_id: str) -> None:
        """Kill every container of the pod at once, as StopPodSandbox asks."""
        ids = [c.id for c in self.store.in_sandbox(sandbox_id)]
        await asyncio.gather(*(self.stop(i, 0) for i in ids))

    async def remove_all(self, sandbox_id: str) -> None:
        """Every container of the pod removed, clean-ups included: the pod's own clean-up
        (its cgroup, its namespaces) needs them gone."""
        ids = [c.id for c in self.store.in_sandbox(sandbox_id)]
        await asyncio.gather(*(self._in_flight.run(self._remove(i)) for i in ids))
        cleanups = [t for sid, t in self._cleanups.values() if sid == sandbox_id]
        await asyncio.gather(*cleanups, return_exceptions=True)

    async def removals_settled(self) -> None:
        await asyncio.gather(*(t for _, t in self._cleanups.values()), return_exceptions=True)

    async def drain(self) -> None:
        await self._in_flight.drain()

    def _ready_sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(
                f"pod sandbox {sandbox.id} is not ready (stopped): its containers cannot run"
            )
        return sandbox

    async def _create(self, sandbox_id: str, config: ContainerConfig) -> Container:
        sandbox = self._ready_sandbox(sandbox_id)
        validate(config)
        image = self.images.find(config.image)
        if image is None:
            raise NotFound(f"image {config.image!r} not found: pull it first")
        volume_images = {}
        volume_image_refs = {}
        volumes: dict[int, list[Path]] = {}
        for index, mount in enumerate(config.mounts):
            if not mount.image:
                continue
            volume = self.images.find(mount.image)
            if volume is None:
                raise NotFound(f"image {mount.image!r} of config.mounts[{index}] not found")
            volume_images[mount.container_path] = volume.id
            volume_image_refs[mount.container_path] = volume.digest_reference
            volumes[index] = self.images.lower_dirs(volume)
        container_id = secrets.token_hex(32)
        paths = self.layout.container(container_id)
        log_path = container_log_path(sandbox, config)
        image_config = self._image_configs.get(image.id)
        if image_config is None:
            # An image id is its config's digest: what it parses to never changes.
            image_config = parse_image_config(await asyncio.to_thread(self.images.config, image))
            self._image_configs[image.id] = image_config
        container = Container(
            id=container_id,
            sandbox_id=sandbox.id,
            config=config,
            state=ContainerState.CREATING,
            created_at_ns=time.time_ns(),
            image_id=image.id,
            image_ref=image.digest_reference,
            runtime_handler=sandbox.runtime_handler,
            bundle=str(paths.bundle),
            log_path=log_path,
            stop_signal=config.stop_signal or image_config.stop_signal,
            volume_images=volume_images,
            volume_image_refs=volume_image_refs,
            resources=config.resources,
        )
        self.store.reserve(container, reserved_name(container, sandbox.name))
        bound = log.bind(container_id=container_id, sandbox_id=sandbox.id)
        started = time.perf_counter()
        lowers = self.images.lower_dirs(image)
        try:
            built = await self.host.build(container, sandbox, image_config, lowers, volumes)
        except BaseException:
            await self._undo_create(container, sandbox)
            raise
        self._exited[container_id] = asyncio.Event()
        created = self.store.update(
            container_id, lambda c: replace(c, state=ContainerState.CREATED, user=built.user)
        )
        bound.info(
            "container created",
            name=config.name,
            image=image.id,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        self._publish(EventKind.CREATED, created)
        return created

    async def _undo_create(self, container: Container, sandbox: Sandbox) -> None:
        await self.host.remove_files(container.id, sandbox)
        self.store.delete(container.id)

    async def _start(self, id_or_prefix: str) -> None:
        async with self._locked(id_or_prefix) as container:
            # First: stopping the pod also ends the containers it never started.
            self._ready_sandbox(container.sandbox_id)
            if container.state is not ContainerState.CREATED:
                raise FailedPrecondition(
                    f"container {container.id} is {container.state.value}, not created"
                )
            # As in containerd, the runtime's create waits for the start: CreateContainer only
            # prepares files, and a created container holds no process, conmon or cgroup.
            await self._create_in_runtime(container)
            # Taken before the start: a short-lived container may exit (and be recorded as
            # finished) before the runtime's `start` returns.
            now = time.time_ns()
            try:
                await self.host.start(container)
            except OciRuntimeError as exc:
                # The runtime may complain about a container that started and already ended;
                # conmon's exit file tells those apart from a start that never happened.
                if not exit_recorded(self.layout.exit_file(container.id)):
                    self._finish(container, 128, "ContainerCannotRun", str(exc))
                    raise ContainerRuntimeFailed(
                        f"starting container {container.id}: {exc}"
                    ) from None
            started = self.store.update(
                container.id,
                lambda c: (
                    replace(c, state=ContainerState.RUNNING, started_at_ns=now)
                    if c.state is ContainerState.CREATED
                    else replace(c, started_at_ns=now)
                ),
            )
            log.info("container started", container_id=container.id)
            self._publish(EventKind.STARTED, started)
            if started.state is ContainerState.EXITED:
                self._publish(EventKind.STOPPED, started)

    async def _create_in_runtime(self, container: Container) -> None:
        try:
            process = await self.host.create(container)
        except BaseException as exc:
            with contextlib.suppress(OciRuntimeError):
                await self.host.delete(container)
            if not isinstance(exc, ConmonError | OciRuntimeError):
                raise
            self._finish(container, 128, "ContainerCannotRun", str(exc))
            raise ContainerRuntimeFailed(f"starting container {container.id}: {exc}") from None
        await self.host.created(container)
        self.store.update(
            container.id,
            lambda c: replace(c, pid=process.pid, conmon_pid=process.conmon_pid),
        )

    async def _stop(self, id_or_prefix: str, timeout_s: float) -> None:
        # The CRI makes stop idempotent: the kubelet retries it after restarts, for
        # containers that may be gone.
        found = self.store.find(id_or_prefix)
        if found is None:
            return
        async with self._locks.held(found.id):
            current = self.store.find(found.id)
            if current is not None:
                await self._stop_locked(current, timeout_s)

    async def _stop_locked(self, container: Container, timeout_s: float) -> None:
        if container.state is not ContainerState.RUNNING:
            # A created container has nothing running yet (its init waits for `start`), as
            # in containerd stopping it changes nothing; removal deletes it.
            return
        if timeout_s > 0:
            signum = signal_number(container.stop_signal)
            with contextlib.suppress(OciRuntimeError):
                await self.host.kill(container, signum, all_processes=False)
            if await self._wait_exit(container.id, timeout_s):
                return
        with contextlib.suppress(OciRuntimeError):
            await self.host.kill(container, signal.SIGKILL, all_processes=True)
        if not await self._wait_exit(container.id, KILL_WAIT_S):
            raise ContainerRuntimeFailed(f"container {container.id} did not exit after SIGKILL")

    async def _wait_exit(self, container_id: str, timeout_s: float) -> bool:
        current = self.store.find(container_id)
        if current is None or current.state is ContainerState.EXITED:
            return True
        event = self._exited.setdefault(container_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _remove(self, id_or_prefix: str) -> None:
        container = self.store.find(id_or_prefix)
        if container is None:
            return
        async with self._locks.held(container.id):
            current = self.store.find(container.id)
            if current is None:
                return
            await self._stop_locked(current, 0)
            final = self.store.find(current.id) or current
            retired = self.store.retire(current.id)
            self._exited.pop(current.id, None)
            log.info("container removed", container_id=current.id)
            self._publish(EventKind.DELETED, final)
        # The runtime's delete, the unmount and the file and cgroup removal take tens of
        # ms that the kubelet need not wait for: its next calls see the container gone.
        # A context of its own: its writes belong to no call's durability.
        task = asyncio.get_running_loop().create_task(
            self._in_flight.run(self._clean_up(retired)), context=contextvars.Context()
        )
        self._cleanups[retired.id] = (retired.sandbox_id, task)
        task.add_done_callback(lambda _: self._cleanups.pop(retired.id, None))

    async def _clean_up(self, container: Container) -> None:
        try:
            if container.conmon_pid:
                with contextlib.suppress(OciRuntimeError):
                    await self.host.delete(container)
            await self.host.remove_files(container.id, self.sandboxes.find(container.sandbox_id))
        except OSError as exc:
            # The row stays as removing: the next start of the agent tries again.
            log.warning("container clean-up failed", container_id=container.id, error=str(exc))
            return
        self.store.delete(container.id)

    async def update_resources(self, id_or_prefix: str, resources: Resources) -> Container:
        check_resources(resources, "linux")
        async with self._locked(id_or_prefix) as container:
            if container.state not in (ContainerState.CREATED, ContainerState.RUNNING):
                raise FailedPrecondition(
                    f"container {container.id} is {container.state.value}: nothing to update"
                )
            clamped = replace(
                resources, oom_score_adj=max(resources.oom_score_adj, own_oom_score_adj())
            )
            try:
                await self.host.update(container, resources_to_oci(clamped))
            except OciRuntimeError as exc:
                raise InvalidArgument(
                    f"updating container {container.id} resources: {exc} (limits unchanged)"
                ) from None
            return self.store.update(container.id, lambda c: replace(c, resources=resources))

    async def reopen_log(self, id_or_prefix: str) -> None:
        container = self.store.get(id_or_prefix)
        if container.state is not ContainerState.RUNNING:
            raise FailedPrecondition(
                f"container {container.id} is {container.state.value}, not running: "
                "no log to reopen"
            )
        try:
            await self.host.reopen_log(container)
        except ConmonError as exc:
            raise ContainerRuntimeFailed(f"container {container.id}: {exc}") from None

    async def exec_sync(
        self, id_or_prefix: str, command: list[str], timeout_s: float
    ) -> tuple[int, bytes, bytes]:
        container = self.store.get(id_or_prefix)
        if container.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running")
        if not command:
            raise InvalidArgument("cmd is empty")
        try:
            result = await self.host.exec_sync(container, command, timeout_s, EXEC_OUTPUT_CAP)
        except ConmonError as exc:
            raise ContainerRuntimeFailed(f"exec of {command!r}: {exc}") from None
        if result.timed_out:
            raise DeadlineExceeded(
                f"command {command!r} in container {container.id} timed out after {timeout_s} s"
            )
        return result.exit_code, result.stdout, result.stderr

    # -- exits --------------------------------------------------------------------------

    def on_exit(self, container_id: str, exit_code: int) -> None:
        """The exit watcher saw conmon's exit file for this container."""
        container = self.store.find(container_id)
        if container is None or container.state in (ContainerState.EXITED,):
            return
        finished = self._finish(container, exit_code)
        log.info(
            "container exited",
            container_id=container_id,
            exit_code=exit_code,
            reason=finished.reason,
        )
        if finished.started_at_ns or container.state is ContainerState.RUNNING:
            self._publish(EventKind.STOPPED, finished)

    def _finish(
        self, container: Container, code: int, reason: str = "", message: str = ""
    ) -> Container:
        finished = self._exits.record(container, code, time.time_ns(), reason, message)
        self._exited.setdefault(container.id, asyncio.Event()).set()
        return finished

    def _publish(self, kind: EventKind, container: Container) -> None:
        sandbox = self.sandboxes.find(container.sandbox_id)
        pod = [
            c
            for c in self.store.in_sandbox(container.sandbox_id)
            if c.state is not ContainerState.CREATING and c.id != container.id
        ]
        pod.append(container)
        self.events.publish(ContainerEvent(kind, container, time.time_ns(), sandbox, pod))

    # -- locking ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, id_or_prefix: str) -> AsyncIterator[Container]:
        found = self.store.get(id_or_prefix)
        async with self._locks.held(found.id):
            yield self.store.get(found.id)
