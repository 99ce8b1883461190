from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from runtime.pods.model import (
    DnsConfig,
    InfraProcess,
    NamespaceMode,
    NamespaceOptions,
    PodMetadata,
    PortMapping,
    Protocol,
    Sandbox,
    SandboxConfig,
    SandboxState,
)
from runtime.state.codec import from_json, to_json
from tests.unit.builders import sandbox


def _full_sandbox() -> Sandbox:
    config = SandboxConfig(
        metadata=PodMetadata(name="web", uid="u-1", namespace="prod", attempt=3),
        hostname="web-0",
        log_directory="/var/log/pods/prod_web_u-1",
        dns=DnsConfig(servers=["1.1.1.1", "8.8.8.8"], searches=["a.local"], options=["ndots:2"]),
        port_mappings=[
            PortMapping(Protocol.TCP, 80, 8080, "127.0.0.1"),
            PortMapping(Protocol.UDP, 53, 1053),
            PortMapping(Protocol.SCTP, 9, 9009, "::1"),
        ],
        labels={"app": "web", "tier": "front"},
        annotations={"note": 'ünïcode "quoted"\nmultiline'},
        cgroup_parent="kubepods-besteffort-podu_1.slice",
        sysctls={"net.core.somaxconn": "1024", "kernel.shmmax": "1"},
        namespaces=NamespaceOptions(
            network=NamespaceMode.NODE,
            pid=NamespaceMode.TARGET,
            ipc=NamespaceMode.POD,
            target_id="c0ffee",
        ),
        privileged=True,
        runtime_handler="crun",
    )
    return Sandbox(
        id="0123abcd",
        config=config,
        state=SandboxState.NOTREADY,
        created_at_ns=1_700_000_000_123_456_789,
        runtime_handler="crun",
        cgroup_path="/kubepods.slice/moorage-0123abcd.scope",
        pins={"ipc": "/run/moorage/ipcns/0123abcd", "uts": "/run/moorage/utsns/0123abcd"},
        shm_path="/run/moorage/sandboxes/0123abcd/shm",
        resolv_conf_path="/var/lib/moorage/sandboxes/0123abcd/resolv.conf",
        infra=InfraProcess(pid=4242, start_ticks=987654321),
    )


def _edited(pod: Sandbox, edit: Any) -> str:
    raw = json.loads(to_json(pod))
    edit(raw)
    return json.dumps(raw)


def test_fully_populated_sandbox_round_trips() -> None:
    pod = _full_sandbox()

    decoded = from_json(Sandbox, to_json(pod))

    assert decoded == pod
    assert isinstance(decoded.config.port_mappings[0], PortMapping)
    assert decoded.config.port_mappings[2].protocol is Protocol.SCTP
    assert decoded.config.namespaces.pid is NamespaceMode.TARGET
    assert decoded.state is SandboxState.NOTREADY


def test_sandbox_without_infra_or_dns_round_trips() -> None:
    bare = sandbox("a1", infra=None)
    pod = replace(bare, config=SandboxConfig(metadata=bare.config.metadata))

    decoded = from_json(Sandbox, to_json(pod))

    assert decoded == pod
    assert decoded.infra is None
    assert decoded.config.dns is None


def test_enums_are_stored_by_value() -> None:
    raw = json.loads(to_json(_full_sandbox()))

    assert raw["state"] == "notready"
    assert raw["config"]["namespaces"]["network"] == "node"
    assert raw["config"]["port_mappings"][0]["protocol"] == "tcp"
    assert raw["infra"] == {"pid": 4242, "start_ticks": 987654321}


def test_encoding_is_stable_for_equal_objects() -> None:
    assert to_json(_full_sandbox()) == to_json(_full_sandbox())


def test_unknown_keys_in_stored_json_are_ignored() -> None:
    pod = _full_sandbox()

    def add_future_fields(raw: dict[str, Any]) -> None:
        raw["added_in_v2"] = {"x": 1}
        raw["config"]["seccomp"] = "runtime/default"
        raw["config"]["port_mappings"][0]["hostname"] = "h"
        raw["infra"]["cmdline"] = ["pause"]

    assert from_json(Sandbox, _edited(pod, add_future_fields)) == pod


def test_missing_keys_take_their_defaults() -> None:
    pod = _full_sandbox()

    def drop_optional_fields(raw: dict[str, Any]) -> None:
        for key in ("pins", "shm_path", "resolv_conf_path", "infra"):
            del raw[key]
        for key in ("hostname", "dns", "port_mappings", "labels", "sysctls", "namespaces"):
            del raw["config"][key]
        del raw["config"]["metadata"]["attempt"]

    decoded = from_json(Sandbox, _edited(pod, drop_optional_fields))

    assert decoded.pins == {}
    assert decoded.shm_path == ""
    assert decoded.resolv_conf_path == ""
    assert decoded.infra is None
    assert decoded.config.hostname == ""
    assert decoded.config.dns is None
    assert decoded.config.port_mappings == []
    assert decoded.config.labels == {}
    assert decoded.config.sysctls == {}
    assert decoded.config.namespaces == NamespaceOptions()
    assert decoded.config.metadata == PodMetadata("web", "u-1", "prod", 0)
    assert decoded.config.annotations == pod.config.annotations
    assert decoded.id == pod.id


def test_explicit_null_infra_decodes_to_none() -> None:
    pod = _full_sandbox()

    def clear_infra(raw: dict[str, Any]) -> None:
        raw["infra"] = None

    assert from_json(Sandbox, _edited(pod, clear_infra)).infra is None
