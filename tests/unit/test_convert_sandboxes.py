from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from cri.convert.filters import sandbox_filter_from_proto
from cri.convert.info import verbose_info
from cri.convert.resources import pod_resources_from_proto
from cri.convert.sandboxes import (
    sandbox_config_from_proto,
    sandbox_status_to_proto,
    sandbox_to_proto,
)
from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument
from runtime.pods.model import (
    DnsConfig,
    InfraProcess,
    NamespaceMode,
    NamespaceOptions,
    PodMetadata,
    PodResources,
    PortMapping,
    Protocol,
    SandboxConfig,
    SandboxFilter,
    SandboxState,
)
from runtime.resources import Resources
from tests.unit.builders import sandbox

NS_FIELD = "config.linux.security_context.namespace_options"


def _request(**config_fields: Any) -> Any:
    fields: dict[str, Any] = {
        "metadata": pb.PodSandboxMetadata(name="web", uid="u-1", namespace="prod", attempt=2),
        **config_fields,
    }
    return pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(**fields), runtime_handler="runc")


def _full_request() -> Any:
    return _request(
        hostname="web-0",
        log_directory="/var/log/pods/prod_web_u-1",
        dns_config=pb.DNSConfig(
            servers=["10.96.0.10"], searches=["prod.svc.cluster.local"], options=["ndots:5"]
        ),
        port_mappings=[
            pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=8080, host_ip="1.2.3.4"),
            pb.PortMapping(protocol=pb.UDP, container_port=53, host_port=0),
            pb.PortMapping(protocol=pb.SCTP, container_port=65535, host_port=65535),
        ],
        labels={"app": "web", "io.kubernetes.pod.name": "web"},
        annotations={"kubernetes.io/config.seen": "2024-01-01T00:00:00Z"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent="kubepods-besteffort-podu_1.slice",
            sysctls={"net.core.somaxconn": "1024"},
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(
                    network=pb.NODE, pid=pb.TARGET, ipc=pb.POD, target_id="c0ffee"
                ),
                privileged=True,
            ),
        ),
    )


# --- sandbox_config_from_proto -------------------------------------------------------------


def test_every_request_field_is_carried_into_the_sandbox_config() -> None:
    assert sandbox_config_from_proto(_full_request()) == SandboxConfig(
        metadata=PodMetadata(name="web", uid="u-1", namespace="prod", attempt=2),
        hostname="web-0",
        log_directory="/var/log/pods/prod_web_u-1",
        dns=DnsConfig(
            servers=["10.96.0.10"], searches=["prod.svc.cluster.local"], options=["ndots:5"]
        ),
        port_mappings=[
            PortMapping(Protocol.TCP, 80, 8080, "1.2.3.4"),
            PortMapping(Protocol.UDP, 53, 0, ""),
            PortMapping(Protocol.SCTP, 65535, 65535, ""),
        ],
        labels={"app": "web", "io.kubernetes.pod.name": "web"},
        annotations={"kubernetes.io/config.seen": "2024-01-01T00:00:00Z"},
        cgroup_parent="kubepods-besteffort-podu_1.slice",
        sysctls={"net.core.somaxconn": "1024"},
        namespaces=NamespaceOptions(
            network=NamespaceMode.NODE,
            pid=NamespaceMode.TARGET,
            ipc=NamespaceMode.POD,
            target_id="c0ffee",
        ),
        privileged=True,
        runtime_handler="runc",
    )


def test_minimal_request_gives_empty_defaults() -> None:
    config = sandbox_config_from_proto(_request())

    assert config.dns is None
    assert config.port_mappings == []
    assert config.labels == {}
    assert config.sysctls == {}
    assert config.cgroup_parent == ""
    assert config.privileged is False
    assert config.namespaces == NamespaceOptions(
        network=NamespaceMode.POD, pid=NamespaceMode.POD, ipc=NamespaceMode.POD
    )


def test_empty_dns_config_is_kept_as_an_empty_dns_config() -> None:
    config = sandbox_config_from_proto(_request(dns_config=pb.DNSConfig()))

    assert config.dns == DnsConfig()


def test_request_without_config_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"^config is missing$"):
        sandbox_config_from_proto(pb.RunPodSandboxRequest(runtime_handler="runc"))


def test_config_without_metadata_is_refused() -> None:
    request = pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(hostname="h"))

    with pytest.raises(InvalidArgument, match=r"^config\.metadata is missing$"):
        sandbox_config_from_proto(request)


@pytest.mark.parametrize("field", ["name", "uid", "namespace"])
def test_empty_metadata_field_is_refused_naming_it(field: str) -> None:
    metadata = pb.PodSandboxMetadata(name="web", uid="u-1", namespace="prod")
    setattr(metadata, field, "")

    with pytest.raises(InvalidArgument, match=f"^config.metadata.{field} is empty$"):
        sandbox_config_from_proto(_request(metadata=metadata))


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            pb.PortMapping(container_port=65536, host_port=80),
            r"config.port_mappings\[0\].container_port 65536 is out of range",
        ),
        (
            pb.PortMapping(container_port=80, host_port=-1),
            r"config.port_mappings\[0\].host_port -1 is out of range",
        ),
        (
            pb.PortMapping(container_port=-80, host_port=80),
            r"config.port_mappings\[0\].container_port -80 is out of range",
        ),
    ],
)
def test_port_out_of_range_is_refused(mapping: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        sandbox_config_from_proto(_request(port_mappings=[mapping]))


def test_bad_port_is_named_by_its_index() -> None:
    mappings = [pb.PortMapping(container_port=80), pb.PortMapping(container_port=70000)]

    with pytest.raises(InvalidArgument, match=r"port_mappings\[1\]"):
        sandbox_config_from_proto(_request(port_mappings=mappings))


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"port_mappings\[0\]\.protocol: unknown value 9"):
        sandbox_config_from_proto(
            _request(
                port_mappings=[pb.PortMapping(protocol=pb.Protocol.ValueType(9), container_port=80)]
            )
        )


@pytest.mark.parametrize("mode", ["network", "pid", "ipc"])
def test_unknown_namespace_mode_is_refused_naming_the_field(mode: str) -> None:
    options = pb.NamespaceOption()
    setattr(options, mode, 7)
    linux = pb.LinuxPodSandboxConfig(
        security_context=pb.LinuxSandboxSecurityContext(namespace_options=options)
    )

    with pytest.raises(InvalidArgument, match=f"^{NS_FIELD}.{mode}: unknown value 7$"):
        sandbox_config_from_proto(_request(linux=linux))


# --- model -> proto ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [(SandboxState.READY, pb.SANDBOX_READY), (SandboxState.NOTREADY, pb.SANDBOX_NOTREADY)],
)
def test_sandbox_status_carries_the_sandbox(
    state: SandboxState, expected: pb.PodSandboxState.ValueType
) -> None:
    pod = sandbox("a1b2", state=state, created_at_ns=1_700_000_000_000_000_001)

    status = pb.PodSandboxStatus.FromString(sandbox_status_to_proto(pod).SerializeToString())

    assert status.id == "a1b2"
    assert status.state == expected
    assert status.created_at == 1_700_000_000_000_000_001
    assert status.metadata == pb.PodSandboxMetadata(
        name="web", uid="uid-a1b2", namespace="default", attempt=0
    )
    assert dict(status.labels) == pod.config.labels
    assert dict(status.annotations) == pod.config.annotations
    assert status.runtime_handler == "runc"
    assert status.linux.namespaces.options == pb.NamespaceOption(
        network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD
    )


def test_sandbox_status_reports_host_and_target_namespaces() -> None:
    pod = sandbox("a1")
    namespaces = NamespaceOptions(
        network=NamespaceMode.NODE, pid=NamespaceMode.TARGET, ipc=NamespaceMode.NODE, target_id="c1"
    )
    pod = replace(pod, config=replace(pod.config, namespaces=namespaces))

    options = sandbox_status_to_proto(pod).linux.namespaces.options

    assert (options.network, options.pid, options.ipc, options.target_id) == (
        pb.NODE,
        pb.TARGET,
        pb.NODE,
        "c1",
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [(SandboxState.READY, pb.SANDBOX_READY), (SandboxState.NOTREADY, pb.SANDBOX_NOTREADY)],
)
def test_listed_sandbox_carries_the_sandbox(
    state: SandboxState, expected: pb.PodSandboxState.ValueType
) -> None:
    pod = sandbox("a1b2", state=state, created_at_ns=42)

    listed = pb.PodSandbox.FromString(sandbox_to_proto(pod).SerializeToString())

    assert listed == pb.PodSandbox(
        id="a1b2",
        metadata=pb.PodSandboxMetadata(name="web", uid="uid-a1b2", namespace="default"),
        state=expected,
        created_at=42,
        labels=pod.config.labels,
        annotations=pod.config.annotations,
        runtime_handler="runc",
    )


def test_config_from_a_request_survives_the_trip_back_to_proto() -> None:
    request = _full_request()
    config = sandbox_config_from_proto(request)
    pod = replace(sandbox("a1"), config=config)

    listed = sandbox_to_proto(pod)

    assert listed.metadata == request.config.metadata
    assert listed.labels == request.config.labels
    assert listed.annotations == request.config.annotations


def test_verbose_info_is_json_locating_the_kernel_objects() -> None:
    pod = sandbox("a1", infra=InfraProcess(pid=77, start_ticks=1))

    info = json.loads(verbose_info(pod.verbose_info())["info"])

    assert info["pins"] == pod.pins
    assert info["cgroup"] == pod.cgroup_path
    assert info["pids"] == {"infra": 77}
    assert info["shm"] == pod.shm_path
    assert info["resolv_conf"] == pod.resolv_conf_path
    assert info["name"] == pod.name
    assert info["sysctls"] == pod.config.sysctls


def test_verbose_info_without_infra_has_no_pids() -> None:
    info = json.loads(verbose_info(sandbox("a1").verbose_info())["info"])

    assert info["pids"] == {}


def test_verbose_info_reports_the_pod_resources_in_force() -> None:
    pod = replace(
        sandbox("a1"),
        resources=PodResources(
            resources=Resources(cpu_shares=512, hugepage_limits={"2MB": 2 << 20}),
            overhead=Resources(memory_limit_bytes=1 << 20),
        ),
    )

    info = json.loads(verbose_info(pod.verbose_info())["info"])

    assert info["resources"]["resources"]["cpu_shares"] == 512
    assert info["resources"]["resources"]["hugepage_limits"] == {"2MB": 2 << 20}
    assert info["resources"]["overhead"]["memory_limit_bytes"] == 1 << 20


def test_verbose_info_of_a_pod_never_updated_has_no_resources() -> None:
    assert json.loads(verbose_info(sandbox("a1").verbose_info())["info"])["resources"] is None


# --- pod_resources_from_proto ---------------------------------------------------------------


def test_pod_resources_carry_both_parts_of_the_request() -> None:
    request = pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id="a1",
        overhead=pb.LinuxContainerResources(cpu_shares=64),
        resources=pb.LinuxContainerResources(
            memory_limit_in_bytes=1 << 30, cpuset_cpus="0", unified={"pids.max": "9"}
        ),
    )

    assert pod_resources_from_proto(request) == PodResources(
        resources=Resources(memory_limit_bytes=1 << 30, cpuset_cpus="0", unified={"pids.max": "9"}),
        overhead=Resources(cpu_shares=64),
    )


def test_absent_parts_of_a_pod_resources_request_set_nothing() -> None:
    request = pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="a1")

    assert pod_resources_from_proto(request) == PodResources()


# --- sandbox_filter_from_proto -------------------------------------------------------------


def test_request_without_filter_gives_the_empty_filter() -> None:
    assert sandbox_filter_from_proto(pb.ListPodSandboxRequest()) == SandboxFilter()


def test_filter_without_state_leaves_the_state_open() -> None:
    request = pb.ListPodSandboxRequest(
        filter=pb.PodSandboxFilter(id="ab", label_selector={"app": "web"})
    )

    assert sandbox_filter_from_proto(request) == SandboxFilter(
        id_prefix="ab", state=None, label_selector={"app": "web"}
    )


@pytest.mark.parametrize(
    ("value", "state"),
    [(pb.SANDBOX_READY, SandboxState.READY), (pb.SANDBOX_NOTREADY, SandboxState.NOTREADY)],
)
def test_filter_with_state_selects_that_state(
    value: pb.PodSandboxState.ValueType, state: SandboxState
) -> None:
    request = pb.ListPodSandboxRequest(
        filter=pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=value))
    )

    assert sandbox_filter_from_proto(request) == SandboxFilter(state=state)


def test_filter_with_unknown_state_is_refused() -> None:
    request = pb.ListPodSandboxRequest(
        filter=pb.PodSandboxFilter(
            state=pb.PodSandboxStateValue(state=pb.PodSandboxState.ValueType(5))
        )
    )

    with pytest.raises(InvalidArgument, match=r"filter\.state\.state: unknown value 5"):
        sandbox_filter_from_proto(request)
