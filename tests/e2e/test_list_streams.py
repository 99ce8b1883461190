"""The Stream* RPCs against a node of 300 containers: each answers exactly the items of its List
counterpart, with the same filters, in pages a client capped at 64 KiB can receive; a client
that cancels half-way leaves the agent serving."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from tests.e2e.agent import Agent, AgentFactory
from tests.e2e.containers import Pod, container_config, pulled, start
from tests.registry_fixture import LocalRegistry
from tests.waiting import wait_until

PODS = 3
CONTAINERS_PER_POD = 100
RUNNING_PER_POD = 2
CLIENT_CAP_BYTES = 64 * 1024


@dataclass
class Node:
    agent: Agent
    pods: list[Pod]
    containers: dict[str, list[str]]
    image: str


def _kubelet_like_config(image: str, pod: Pod, index: int) -> Any:
    # kubelet labels and annotates every container; they make up most of a Container message.
    name = f"c{index}-{secrets.token_hex(3)}"
    labels = {
        "io.kubernetes.container.name": name,
        "io.kubernetes.pod.name": pod.config.metadata.name,
        "io.kubernetes.pod.namespace": pod.config.metadata.namespace,
        "io.kubernetes.pod.uid": pod.config.metadata.uid,
    }
    annotations = {
        "io.kubernetes.container.hash": secrets.token_hex(4),
        "io.kubernetes.container.restartCount": "0",
        "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
        "io.kubernetes.container.terminationMessagePolicy": "File",
        "io.kubernetes.pod.terminationGracePeriod": "30",
    }
    return container_config(
        image, ["sleep", "600"], name=name, labels=labels, annotations=annotations
    )


@pytest.fixture(scope="module")
def node(registry: LocalRegistry) -> Iterator[Node]:
    factory = AgentFactory()
    try:
        agent = factory()
        image = pulled(agent, registry)
        pods = [Pod(agent, labels={"group": f"g{i}"}) for i in range(PODS)]
        containers: dict[str, list[str]] = {}
        for pod in pods:
            ids = [
                pod.create(_kubelet_like_config(image, pod, i)) for i in range(CONTAINERS_PER_POD)
            ]
            for container_id in ids[:RUNNING_PER_POD]:
                start(agent, container_id)
            containers[pod.id] = ids
        yield Node(agent, pods, containers, image)
    finally:
        problems = factory.cleanup()
        if problems:
            pytest.fail("cleanup after the module failed:\n" + "\n".join(problems))


@pytest.fixture
def capped(node: Node) -> Iterator[api_pb2_grpc.RuntimeServiceStub]:
    options = [("grpc.max_receive_message_length", CLIENT_CAP_BYTES)]
    with grpc.insecure_channel(f"unix://{node.agent.socket}", options=options) as channel:
        yield api_pb2_grpc.RuntimeServiceStub(channel)


def _pages(responses: Iterator[Any], field: str) -> list[list[Any]]:
    return [list(getattr(r, field)) for r in responses]


def _flat(pages: list[list[Any]]) -> list[Any]:
    return [item for page in pages for item in page]


def _assert_paged(pages: list[list[Any]]) -> None:
    assert all(pages), "every page holds at least one item"


def _key(item: Any) -> str:
    """An item's identity across List and Stream answers."""
    for path in ("id", "attributes.id", "pod_sandbox_id"):
        value: Any = item
        for part in path.split("."):
            value = getattr(value, part, None)
        if value:
            return str(value)
    raise AssertionError(f"no id in {item}")


def _by_key(items: list[Any]) -> dict[str, Any]:
    keyed = {_key(i): i for i in items}
    assert len(keyed) == len(items), "no item twice"
    return keyed


def test_stream_containers_gives_every_container_once_like_list(node: Node) -> None:
    runtime = node.agent.runtime
    listed = runtime.ListContainers(pb.ListContainersRequest()).containers

    pages = _pages(runtime.StreamContainers(pb.StreamContainersRequest()), "containers")

    _assert_paged(pages)
    streamed = _by_key(_flat(pages))
    assert len(streamed) == PODS * CONTAINERS_PER_POD
    assert streamed == _by_key(list(listed))
    assert len(pages) > 1


def test_a_client_capped_at_64_kib_can_stream_what_it_cannot_list(
    node: Node, capped: api_pb2_grpc.RuntimeServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as too_big:
        capped.ListContainers(pb.ListContainersRequest())
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    responses = list(capped.StreamContainers(pb.StreamContainersRequest()))

    assert all(r.ByteSize() <= CLIENT_CAP_BYTES for r in responses)
    ids = {c.id for r in responses for c in r.containers}
    assert ids == {i for pod_ids in node.containers.values() for i in pod_ids}


@pytest.mark.parametrize(
    ("make_filter", "expected"),
    [
        (lambda n: pb.ContainerFilter(pod_sandbox_id=n.pods[1].id), "pod"),
        (lambda n: pb.ContainerFilter(id=n.containers[n.pods[0].id][7]), "one"),
        (
            lambda n: pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)),
            "running",
        ),
        (
            lambda n: pb.ContainerFilter(
                label_selector={"io.kubernetes.pod.uid": n.pods[2].config.metadata.uid}
            ),
            "label",
        ),
    ],
)
def test_stream_containers_applies_the_list_filters(
    node: Node, make_filter: Callable[[Node], Any], expected: str
) -> None:
    flt = make_filter(node)
    runtime = node.agent.runtime

    listed = {c.id for c in runtime.ListContainers(pb.ListContainersRequest(filter=flt)).containers}
    streamed = _flat(
        _pages(runtime.StreamContainers(pb.StreamContainersRequest(filter=flt)), "containers")
    )

    assert sorted(c.id for c in streamed) == sorted(listed)
    sizes = {"pod": CONTAINERS_PER_POD, "one": 1, "running": PODS * RUNNING_PER_POD}
    sizes["label"] = CONTAINERS_PER_POD
    assert len(listed) == sizes[expected]


def test_stream_pod_sandboxes_gives_the_listed_pods(node: Node) -> None:
    runtime = node.agent.runtime
    listed = runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    one = pb.PodSandboxFilter(label_selector={"group": "g1"})

    pages = _pages(runtime.StreamPodSandboxes(pb.StreamPodSandboxesRequest()), "pod_sandboxes")
    filtered = _flat(
        _pages(
            runtime.StreamPodSandboxes(pb.StreamPodSandboxesRequest(filter=one)), "pod_sandboxes"
        )
    )

    _assert_paged(pages)
    assert _by_key(_flat(pages)) == _by_key(list(listed))
    assert [p.id for p in filtered] == [node.pods[1].id]


def test_stream_container_stats_gives_the_listed_containers(node: Node) -> None:
    runtime = node.agent.runtime
    flt = pb.ContainerStatsFilter(pod_sandbox_id=node.pods[0].id)
    listed = runtime.ListContainerStats(pb.ListContainerStatsRequest(filter=flt)).stats

    pages = _pages(
        runtime.StreamContainerStats(pb.StreamContainerStatsRequest(filter=flt)),
        "container_stats",
    )

    _assert_paged(pages)
    streamed = _by_key(_flat(pages))
    assert streamed.keys() == _by_key(list(listed)).keys()
    assert streamed.keys() == set(node.containers[node.pods[0].id])


def test_stream_pod_sandbox_stats_gives_the_listed_pods(node: Node) -> None:
    runtime = node.agent.runtime
    listed = runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats

    pages = _pages(
        runtime.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest()), "pod_sandbox_stats"
    )

    _assert_paged(pages)
    streamed = _by_key(_flat(pages))
    assert streamed.keys() == _by_key(list(listed)).keys() == {p.id for p in node.pods}
    for pod_id, stats in _by_key(list(listed)).items():
        streamed_ids = {c.attributes.id for c in streamed[pod_id].linux.containers}
        assert streamed_ids == {c.attributes.id for c in stats.linux.containers}


def test_stream_pod_sandbox_metrics_gives_the_listed_pods(node: Node) -> None:
    runtime = node.agent.runtime
    listed = runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics

    pages = _pages(
        runtime.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest()),
        "pod_sandbox_metrics",
    )

    _assert_paged(pages)
    streamed = _by_key(_flat(pages))
    assert streamed.keys() == _by_key(list(listed)).keys() == {p.id for p in node.pods}
    for pod_id, metrics in streamed.items():
        listed_names = {m.name for m in _by_key(list(listed))[pod_id].metrics}
        assert {m.name for m in metrics.metrics} == listed_names


def test_stream_images_gives_the_listed_images(node: Node) -> None:
    images = node.agent.images
    listed = images.ListImages(pb.ListImagesRequest()).images
    wanted = pb.ImageFilter(image=pb.ImageSpec(image=node.image))

    pages = _pages(images.StreamImages(pb.StreamImagesRequest()), "images")
    filtered = _flat(_pages(images.StreamImages(pb.StreamImagesRequest(filter=wanted)), "images"))

    _assert_paged(pages)
    assert _by_key(_flat(pages)) == _by_key(list(listed))
    assert [i.repo_tags[0] for i in filtered] == [node.image]


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.runtime.StreamContainers(
            pb.StreamContainersRequest(filter=pb.ContainerFilter(id="c0ffee"))
        ),
        lambda a: a.runtime.StreamPodSandboxes(
            pb.StreamPodSandboxesRequest(filter=pb.PodSandboxFilter(id="c0ffee"))
        ),
        lambda a: a.runtime.StreamContainerStats(
            pb.StreamContainerStatsRequest(filter=pb.ContainerStatsFilter(id="c0ffee"))
        ),
        lambda a: a.runtime.StreamPodSandboxStats(
            pb.StreamPodSandboxStatsRequest(filter=pb.PodSandboxStatsFilter(id="c0ffee"))
        ),
        lambda a: a.images.StreamImages(
            pb.StreamImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image="c0ffee")))
        ),
    ],
)
def test_an_unknown_id_gives_an_empty_stream_not_an_error(
    node: Node, call: Callable[[Agent], Iterator[Any]]
) -> None:
    assert list(call(node.agent)) == []


def test_clients_cancelling_half_way_leave_the_agent_serving(node: Node) -> None:
    agent = node.agent
    fds_before = agent.fd_count()

    for _ in range(20):
        stream = agent.runtime.StreamContainers(pb.StreamContainersRequest())
        assert next(stream).containers
        stream.cancel()

    # Every cancelled call let go of its stream: the agent holds no more files than before.
    assert wait_until(lambda: agent.fd_count() <= fds_before, timeout_s=10)
    listed = agent.runtime.ListContainers(pb.ListContainersRequest()).containers
    assert len(listed) == PODS * CONTAINERS_PER_POD
