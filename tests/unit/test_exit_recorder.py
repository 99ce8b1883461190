"""One exit recorder for the exit callback and recovery: code, reason and the OOM verdict."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from runtime.containers.exit_recorder import ExitRecorder
from runtime.containers.model import Container, ContainerState
from runtime.host.cgroups import CgroupLayout, CgroupMode
from runtime.state.container_store import ContainerStore
from runtime.state.db import StateDB
from runtime.state.sandbox_store import SandboxStore
from tests.unit.builders import container, sandbox


@pytest.fixture
def bench(tmp_path: Path) -> tuple[ExitRecorder, Container, Path]:
    """A recorder over a running container of a ready pod, and that container's cgroup dir."""
    db = StateDB(tmp_path / "state.db")
    pods = SandboxStore(db)
    pod = sandbox("pod1")
    pods.reserve(pod)
    store = ContainerStore(db)
    running = container("c1", sandbox_id=pod.id)
    store.reserve(running, "c1_pod")
    store.update("c1", lambda c: replace(c, state=ContainerState.RUNNING))
    cgroup = tmp_path / "cgroup" / pod.cgroup_path.strip("/") / "c1"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    layout = CgroupLayout(CgroupMode.V2, {}, tmp_path / "cgroup")
    return ExitRecorder(store, pods, layout.oom_kills), store.get("c1"), cgroup


@pytest.mark.parametrize(("code", "reason"), [(0, "Completed"), (3, "Error"), (143, "Error")])
def test_the_reason_follows_the_code(
    bench: tuple[ExitRecorder, Container, Path], code: int, reason: str
) -> None:
    recorder, running, _ = bench
    finished = recorder.record(running, code, 42)
    assert (finished.state, finished.exit_code, finished.reason, finished.message) == (
        ContainerState.EXITED,
        code,
        reason,
        "",
    )
    assert finished.finished_at_ns == 42
    assert recorder.store.get("c1") == finished


def test_an_oom_kill_in_the_cgroup_makes_it_oomkilled_137(
    bench: tuple[ExitRecorder, Container, Path],
) -> None:
    recorder, running, cgroup = bench
    (cgroup / "memory.events").write_text("oom 1\noom_kill 1\n")
    finished = recorder.record(running, 1, 42)
    assert (finished.exit_code, finished.reason) == (137, "OOMKilled")


def test_a_given_reason_is_kept_with_its_message(
    bench: tuple[ExitRecorder, Container, Path],
) -> None:
    recorder, running, cgroup = bench
    (cgroup / "memory.events").write_text("oom_kill 1\n")
    finished = recorder.record(running, 255, 42, "Unknown", "conmon is gone")
    assert (finished.exit_code, finished.reason, finished.message) == (
        255,
        "Unknown",
        "conmon is gone",
    )
