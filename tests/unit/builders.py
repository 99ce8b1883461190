"""Model objects for unit tests: every field set, so a lost field shows up in comparisons."""

from __future__ import annotations

from typing import Any

from runtime.containers.model import (
    Container,
    ContainerConfig,
    ContainerSecurity,
    ContainerState,
    Device,
    ImageRuntimeConfig,
    Mount,
    ProcessUser,
    Propagation,
    Seccomp,
    SeccompKind,
)
from runtime.oci.spec import SpecInputs, build_spec
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
from runtime.resources import Resources

VOLUME_IMAGE_ID = "sha256:" + "c" * 64
VOLUME_IMAGE_REF = "registry.test/vol@sha256:" + "d" * 64


def pod_config(
    name: str = "web",
    *,
    uid: str = "uid-1",
    namespace: str = "default",
    attempt: int = 0,
    labels: dict[str, str] | None = None,
) -> SandboxConfig:
    return SandboxConfig(
        metadata=PodMetadata(name=name, uid=uid, namespace=namespace, attempt=attempt),
        hostname=f"{name}-host",
        log_directory=f"/var/log/pods/{namespace}_{name}_{uid}",
        dns=DnsConfig(
            servers=["10.96.0.10"],
            searches=["default.svc.cluster.local", "svc.cluster.local"],
            options=["ndots:5"],
        ),
        port_mappings=[
            PortMapping(Protocol.TCP, 80, 8080, "127.0.0.1"),
            PortMapping(Protocol.UDP, 53, 5353),
        ],
        labels={"app": name} if labels is None else labels,
        annotations={"kubernetes.io/config.source": "api"},
        cgroup_parent="/kubepods/besteffort/pod" + uid,
        sysctls={"net.ipv4.ip_forward": "1"},
        namespaces=NamespaceOptions(
            network=NamespaceMode.POD,
            pid=NamespaceMode.CONTAINER,
            ipc=NamespaceMode.POD,
            target_id="",
        ),
        privileged=False,
        runtime_handler="runc",
    )


def sandbox(
    sandbox_id: str = "a1b2c3",
    *,
    name: str = "web",
    uid: str | None = None,
    state: SandboxState = SandboxState.READY,
    created_at_ns: int = 1_000,
    labels: dict[str, str] | None = None,
    infra: InfraProcess | None = None,
) -> Sandbox:
    return Sandbox(
        id=sandbox_id,
        config=pod_config(name, uid=uid or f"uid-{sandbox_id}", labels=labels),
        state=state,
        created_at_ns=created_at_ns,
        runtime_handler="runc",
        cgroup_path=f"/kubepods/moorage-{sandbox_id}",
        pins={"net": f"/run/moorage/netns/{sandbox_id}", "ipc": f"/run/moorage/ipcns/{sandbox_id}"},
        shm_path=f"/run/moorage/sandboxes/{sandbox_id}/shm",
        resolv_conf_path=f"/var/lib/moorage/sandboxes/{sandbox_id}/resolv.conf",
        infra=infra,
    )


def container(container_id: str, *, name: str = "app", sandbox_id: str = "pod1") -> Container:
    config = ContainerConfig(
        name=name,
        image="busybox",
        attempt=1,
        command=["sh"],
        args=["-c", "true"],
        working_dir="/w",
        envs={"A": "1"},
        labels={"tier": "web"},
        annotations={"note": "x"},
        mounts=[
            Mount("/data", "/srv", True, Propagation.HOST_TO_CONTAINER, mount_options=["noexec"]),
            Mount("/vol", "", True, image="registry.test/vol:1"),
        ],
        devices=[Device("/dev/fuse", "/dev/fuse", "rw")],
        log_path="app/1.log",
        stdin=True,
        tty=True,
        stop_signal="SIGINT",
        resources=Resources(cpu_shares=512, memory_limit_bytes=1 << 26, unified={"a": "b"}),
        security=ContainerSecurity(
            run_as_user=1000,
            run_as_group=None,
            supplemental_groups=[5],
            seccomp=Seccomp(SeccompKind.LOCALHOST, "/p.json"),
            namespaces=NamespaceOptions(pid=NamespaceMode.TARGET, target_id="t"),
        ),
    )
    return Container(
        id=container_id,
        sandbox_id=sandbox_id,
        config=config,
        state=ContainerState.RUNNING,
        created_at_ns=1,
        image_id="sha256:" + "a" * 64,
        image_ref="r@sha256:" + "b" * 64,
        runtime_handler="runc",
        bundle="/b",
        log_path="/logs/app/1.log",
        user=ProcessUser(1000, 1000, [5, 6], "app", "/home/app"),
        volume_images={"/vol": VOLUME_IMAGE_ID},
        volume_image_refs={"/vol": VOLUME_IMAGE_REF},
        pid=42,
        conmon_pid=41,
        started_at_ns=2,
    )


def oci_spec(config: ContainerConfig, pod: Sandbox) -> dict[str, Any]:
    """The OCI spec runtime/oci/spec.py builds for `config` in `pod`, with a small seccomp
    profile; `pod` needs its net, ipc and uts pins."""
    inputs = SpecInputs(
        container_id="c1",
        config=config,
        image=ImageRuntimeConfig(entrypoint=["/bin/app"], cmd=["serve"], env=["IMG=1"]),
        user=ProcessUser(uid=1000, gid=1000, additional_gids=[5], home="/home/app"),
        rootfs="/var/lib/moorage/containers/c1/rootfs",
        sandbox=pod,
        cgroups_path=f"{pod.cgroup_path}/c1",
        seccomp_profile={
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}],
        },
        cgroup_v2=True,
        nofile_limit=1024,
    )
    return build_spec(inputs)
