"""Container lifecycle through the CRI client against a running agent, with real images,
conmon and the OCI runtime: logs, exits, stop grace, ExecSync, shared pod namespaces,
resources and the listing filters."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import (
    Pod,
    container_config,
    exec_sync,
    list_containers,
    log_records,
    pulled,
    remove,
    start,
    state,
    status,
    stop,
    wait_for_exit,
)
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


@pytest.fixture
def pod(agent: Agent, tmp_path: Path) -> Pod:
    return Pod(agent, log_directory=tmp_path / "logs")


def log_file(pod: Pod, name: str) -> Path:
    return Path(pod.config.log_directory) / name


def test_output_lands_in_the_cri_log_file(agent: Agent, pod: Pod, image: str) -> None:
    script = "echo out-line; echo err-line >&2; printf partial"
    container_id = pod.run(container_config(image, ["sh", "-c", script], log_path="c/0.log"))

    final = wait_for_exit(agent, container_id)

    assert final.exit_code == 0
    assert final.reason == "Completed"
    assert final.log_path == str(log_file(pod, "c/0.log"))
    records = log_records(log_file(pod, "c/0.log"))
    assert ("stdout", "F", "out-line") in records
    assert ("stderr", "F", "err-line") in records
    assert ("stdout", "P", "partial") in records


def test_a_non_zero_exit_is_an_error_with_its_code(agent: Agent, pod: Pod, image: str) -> None:
    container_id = pod.run(container_config(image, ["sh", "-c", "exit 3"]))

    final = wait_for_exit(agent, container_id)

    assert (final.exit_code, final.reason) == (3, "Error")
    assert final.started_at > 0
    assert final.finished_at >= final.started_at


def test_status_reports_what_was_asked_and_resolved(
    agent: Agent, pod: Pod, image: str, registry: LocalRegistry
) -> None:
    config = container_config(
        image,
        ["sleep", "60"],
        labels={"app": "web"},
        annotations={"note": "kept"},
        mounts=[pb.Mount(container_path="/data", host_path=str(Path(pod.config.log_directory)))],
    )
    container_id = pod.create(config)

    created = status(agent, container_id, verbose=True)
    start(agent, container_id)
    running = status(agent, container_id).status

    assert created.status.state == pb.CONTAINER_CREATED
    assert running.state == pb.CONTAINER_RUNNING
    image_status = agent.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image)))
    assert running.image_id == image_status.image.id
    assert running.image_ref in image_status.image.repo_digests
    assert running.image.image == image
    assert running.image.image_ref == running.image_ref
    (listed,) = list_containers(agent, pb.ContainerFilter(id=container_id))
    assert listed.image_ref == running.image_ref
    assert dict(running.labels) == {"app": "web"}
    assert dict(running.annotations) == {"note": "kept"}
    assert [m.container_path for m in running.mounts] == ["/data"]
    assert running.user.linux.uid == 0
    assert "bundle" in created.info["info"]


def test_list_filters_by_id_state_pod_and_labels(agent: Agent, pod: Pod, image: str) -> None:
    other = Pod(agent)
    running = pod.run(container_config(image, ["sleep", "60"], labels={"tier": "a"}))
    created = pod.create(container_config(image, ["sleep", "60"], labels={"tier": "b"}))
    elsewhere = other.create(container_config(image, ["sleep", "60"], labels={"tier": "a"}))

    def ids(**fields: Any) -> set[str]:
        return {c.id for c in list_containers(agent, pb.ContainerFilter(**fields))}

    assert ids() >= {running, created, elsewhere}
    assert ids(id=running[:12]) == {running}
    assert ids(pod_sandbox_id=pod.id) == {running, created}
    assert ids(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)) == {running}
    assert ids(label_selector={"tier": "a"}) == {running, elsewhere}


def test_stop_lets_a_container_that_traps_sigterm_exit_cleanly(
    agent: Agent, pod: Pod, image: str
) -> None:
    script = "trap 'echo bye; exit 0' TERM; echo trapped; while :; do sleep 0.1; done"
    container_id = pod.run(container_config(image, ["sh", "-c", script], log_path="t.log"))
    # A TERM that comes before the trap is set ends the shell with 143.
    wait_until(lambda: ("stdout", "F", "trapped") in log_records(log_file(pod, "t.log")))

    stop(agent, container_id, timeout=10)

    final = status(agent, container_id).status
    assert (final.state, final.exit_code, final.reason) == (pb.CONTAINER_EXITED, 0, "Completed")
    assert ("stdout", "F", "bye") in log_records(log_file(pod, "t.log"))


def test_stop_kills_a_container_that_ignores_sigterm_after_the_timeout(
    agent: Agent, pod: Pod, image: str
) -> None:
    script = "trap '' TERM; while :; do sleep 1; done"
    container_id = pod.run(container_config(image, ["sh", "-c", script]))

    stop(agent, container_id, timeout=1)

    final = status(agent, container_id).status
    assert (final.state, final.exit_code) == (pb.CONTAINER_EXITED, 137)
    assert final.finished_at - final.started_at >= 1_000_000_000


def test_exec_sync_passes_output_and_exit_code_through(agent: Agent, pod: Pod, image: str) -> None:
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    result = exec_sync(agent, container_id, ["sh", "-c", "echo hi; echo oops >&2; exit 7"])

    assert (result.stdout, result.stderr, result.exit_code) == (b"hi\n", b"oops\n", 7)


def test_exec_sync_past_its_timeout_is_deadline_exceeded(
    agent: Agent, pod: Pod, image: str
) -> None:
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    assert_rpc_error(
        lambda: exec_sync(agent, container_id, ["sleep", "30"], timeout=1),
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "timed out",
    )

    listing = exec_sync(agent, container_id, ["ps"]).stdout.decode()
    assert "sleep 30" not in listing


def test_containers_of_a_pod_share_its_network_and_ipc(agent: Agent, pod: Pod, image: str) -> None:
    first = pod.run(container_config(image, ["sleep", "60"]))
    second = pod.run(container_config(image, ["sleep", "60"]))

    def namespaces(container_id: str) -> tuple[bytes, bytes]:
        net = exec_sync(agent, container_id, ["readlink", "/proc/self/ns/net"]).stdout
        ipc = exec_sync(agent, container_id, ["readlink", "/proc/self/ns/ipc"]).stdout
        return net, ipc

    assert namespaces(first) == namespaces(second)
    server = threading.Thread(
        target=exec_sync, args=(agent, first, ["sh", "-c", "echo hello | nc -l -p 7070"])
    )
    server.start()
    try:
        assert wait_until(
            lambda: (
                b"hello"
                in exec_sync(agent, second, ["sh", "-c", "nc 127.0.0.1 7070 </dev/null"]).stdout
            ),
            timeout_s=10,
        )
    finally:
        server.join(timeout=15)


def test_reopen_log_after_the_file_was_moved_writes_a_new_file(
    agent: Agent, pod: Pod, image: str
) -> None:
    script = "while :; do echo tick; sleep 0.05; done"
    container_id = pod.run(container_config(image, ["sh", "-c", script], log_path="r.log"))
    path = log_file(pod, "r.log")
    assert wait_until(lambda: path.exists() and "tick" in path.read_text())
    path.rename(path.with_suffix(".old"))

    agent.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=container_id))

    assert wait_until(lambda: path.exists() and "tick" in path.read_text())


def test_reopen_log_of_a_stopped_container_fails(agent: Agent, pod: Pod, image: str) -> None:
    container_id = pod.run(container_config(image, ["true"], log_path="s.log"))
    wait_for_exit(agent, container_id)

    assert_rpc_error(
        lambda: agent.runtime.ReopenContainerLog(
            pb.ReopenContainerLogRequest(container_id=container_id)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not running",
    )


def memory_limit_file(agent: Agent, pod: Pod, container_id: str) -> Path:
    cgroup = str(agent.pod_info(pod.id)["cgroup"]).strip("/")
    return Path("/sys/fs/cgroup/memory") / cgroup / container_id / "memory.limit_in_bytes"


def test_update_resources_changes_the_cgroup_and_the_status(
    agent: Agent, pod: Pod, image: str
) -> None:
    resources = pb.LinuxContainerResources(memory_limit_in_bytes=64 * 1024 * 1024)
    config = container_config(
        image, ["sleep", "60"], linux=pb.LinuxContainerConfig(resources=resources)
    )
    container_id = pod.run(config)
    limit = memory_limit_file(agent, pod, container_id)
    assert int(limit.read_text()) == 64 * 1024 * 1024

    agent.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(
            container_id=container_id,
            linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 * 1024 * 1024),
        )
    )

    assert int(limit.read_text()) == 96 * 1024 * 1024
    reported = status(agent, container_id).status.resources.linux
    assert reported.memory_limit_in_bytes == 96 * 1024 * 1024


def test_a_memory_limit_below_usage_is_refused_and_the_old_limit_kept(
    agent: Agent, pod: Pod, image: str
) -> None:
    resources = pb.LinuxContainerResources(memory_limit_in_bytes=64 * 1024 * 1024)
    # dd fills a 24 MiB buffer and blocks writing it to a pipe nobody reads: anonymous
    # memory, which without swap cannot be reclaimed.
    script = "dd if=/dev/zero bs=24M count=1 | sleep 60"
    config = container_config(
        image, ["sh", "-c", script], linux=pb.LinuxContainerConfig(resources=resources)
    )
    container_id = pod.run(config)
    usage = memory_limit_file(agent, pod, container_id).with_name("memory.usage_in_bytes")
    assert wait_until(lambda: int(usage.read_text()) > 24 * 1024 * 1024)

    assert_rpc_error(
        lambda: agent.runtime.UpdateContainerResources(
            pb.UpdateContainerResourcesRequest(
                container_id=container_id,
                linux=pb.LinuxContainerResources(memory_limit_in_bytes=8 * 1024 * 1024),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limits unchanged",
    )

    assert int(memory_limit_file(agent, pod, container_id).read_text()) == 64 * 1024 * 1024
    reported = status(agent, container_id).status.resources.linux
    assert reported.memory_limit_in_bytes == 64 * 1024 * 1024


def test_a_container_over_its_memory_limit_is_oom_killed(
    agent: Agent, pod: Pod, image: str
) -> None:
    resources = pb.LinuxContainerResources(memory_limit_in_bytes=16 * 1024 * 1024)
    config = container_config(
        image,
        ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1"],
        linux=pb.LinuxContainerConfig(resources=resources),
    )
    container_id = pod.run(config)

    final = wait_for_exit(agent, container_id)

    assert (final.exit_code, final.reason) == (137, "OOMKilled")


def test_remove_stops_a_running_container_and_unknown_ids_succeed(
    agent: Agent, pod: Pod, image: str
) -> None:
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    remove(agent, container_id)
    remove(agent, container_id)
    remove(agent, "f" * 64)

    assert container_id not in {c.id for c in list_containers(agent)}
    assert_rpc_error(lambda: status(agent, container_id), grpc.StatusCode.NOT_FOUND)


def test_stop_pod_stops_its_containers_and_remove_pod_removes_them(
    agent: Agent, pod: Pod, image: str
) -> None:
    container_id = pod.run(container_config(image, ["sleep", "60"]))

    agent.stop_pod(pod.id)

    assert state(agent, container_id) == pb.CONTAINER_EXITED
    agent.remove_pod(pod.id)
    assert list_containers(agent, pb.ContainerFilter(pod_sandbox_id=pod.id)) == []


def test_an_image_in_use_keeps_its_content_until_the_container_goes(
    agent: Agent, pod: Pod, image: str
) -> None:
    container_id = pod.run(container_config(image, ["sleep", "60"]))
    spec = pb.ImageSpec(image=image)

    agent.images.RemoveImage(pb.RemoveImageRequest(image=spec))

    assert exec_sync(agent, container_id, ["true"]).exit_code == 0
    image_id = status(agent, container_id).status.image_id
    layers = agent.root_dir / "layers"
    assert any(layers.iterdir())
    remove(agent, container_id)
    agent.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))
    assert not any(layers.iterdir())


def test_events_arrive_in_order_for_two_subscribers(agent: Agent, pod: Pod, image: str) -> None:
    streams = [agent.runtime.GetContainerEvents(pb.GetEventsRequest()) for _ in range(2)]
    received: list[list[tuple[str, int]]] = [[], []]

    watched: set[str] = set()

    def collect(index: int) -> None:
        for event in streams[index]:
            received[index].append((event.container_id, event.container_event_type))
            if (
                event.container_id in watched
                and event.container_event_type == pb.CONTAINER_DELETED_EVENT
            ):
                return

    def subscribed() -> bool:
        # No reply tells when a stream is registered: events of a throwaway container do.
        remove(agent, pod.create(container_config(image, ["true"])))
        return all(received)

    readers = [threading.Thread(target=collect, args=(i,)) for i in range(2)]
    for reader in readers:
        reader.start()
    try:
        assert wait_until(subscribed, timeout_s=10)
        container_id = pod.create(container_config(image, ["true"]))
        watched.add(container_id)
        start(agent, container_id)
        wait_for_exit(agent, container_id)
        remove(agent, container_id)
        for reader in readers:
            reader.join(timeout=10)
    finally:
        for stream in streams:
            stream.cancel()
    mine = [[e for e in events if e[0] == container_id] for events in received]
    expected = [
        (container_id, pb.CONTAINER_CREATED_EVENT),
        (container_id, pb.CONTAINER_STARTED_EVENT),
        (container_id, pb.CONTAINER_STOPPED_EVENT),
        (container_id, pb.CONTAINER_DELETED_EVENT),
    ]
    assert mine == [expected, expected]
