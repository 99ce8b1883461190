"""Writing a container's end into its row: the exit callback and recovery both come here, so
an exit seen live and one found after a restart get the same code, reason and message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from runtime.containers.bundle import container_cgroup_path
from runtime.containers.model import Container, ContainerState
from runtime.state.container_store import ContainerStore
from runtime.state.sandbox_store import SandboxStore

# The code the kubelet sees for a container the kernel's OOM killer ended, as runc reports it.
OOM_EXIT_CODE = 137
# The code of a container whose end nobody recorded (a host reboot, an unreadable exit file).
UNKNOWN_EXIT_CODE = 255


class ExitRecorder:
    def __init__(
        self,
        store: ContainerStore,
        sandboxes: SandboxStore,
        oom_kills: Callable[[str], int],
    ) -> None:
        """oom_kills: the OOM kills a cgroup (by path) has seen."""
        self.store = store
        self.sandboxes = sandboxes
        self._oom_kills = oom_kills

    def record(
        self,
        container: Container,
        code: int,
        finished_at_ns: int,
        reason: str = "",
        message: str = "",
    ) -> Container:
        """The container exited with code; without a reason, it is OOMKilled when its cgroup
        saw an OOM kill (whatever the code), else Completed or Error by the code."""
        if not reason:
            if self._oom_killed(container):
                code, reason = OOM_EXIT_CODE, "OOMKilled"
            else:
                reason = "Completed" if code == 0 else "Error"
        return self.store.update(
            container.id,
            lambda c: replace(
                c,
                state=ContainerState.EXITED,
                finished_at_ns=finished_at_ns,
                exit_code=code,
                reason=reason,
                message=message,
            ),
        )

    def _oom_killed(self, container: Container) -> bool:
        sandbox = self.sandboxes.find(container.sandbox_id)
        if sandbox is None:
            return False
        return self._oom_kills(container_cgroup_path(sandbox.cgroup_path, container.id)) > 0
