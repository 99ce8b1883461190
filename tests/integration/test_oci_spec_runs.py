"""The spec build_spec writes is one runc accepts and runs as asked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.containers.image_user import resolve_user
from runtime.containers.model import ContainerConfig, ContainerSecurity, ImageRuntimeConfig
from runtime.oci.seccomp import load_profile
from runtime.oci.spec import SpecInputs, build_spec
from runtime.pods.model import (
    NamespaceMode,
    NamespaceOptions,
    PodMetadata,
    Sandbox,
    SandboxConfig,
    SandboxState,
)

RUNC = shutil.which("runc")
BUSYBOX = Path("/bin/busybox")
SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")
CGROUP_ROOT = Path("/sys/fs/cgroup")

pytestmark = [
    pytest.mark.skipif(RUNC is None, reason="needs runc"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason=f"needs {BUSYBOX} (busybox-static)"),
]


def _busybox_rootfs(rootfs: Path) -> None:
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    busybox = rootfs / "bin" / "busybox"
    try:
        os.link(BUSYBOX.resolve(), busybox)
    except OSError:
        shutil.copy2(BUSYBOX, busybox)
    # Hard links: symlinks made on the host would point at the host's busybox path.
    for applet in ("sh", "id", "cat", "grep"):
        os.link(busybox, rootfs / "bin" / applet)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")


def _host_pod(resolv_conf: Path) -> Sandbox:
    return Sandbox(
        id=f"sb-{uuid.uuid4().hex[:8]}",
        config=SandboxConfig(
            metadata=PodMetadata(name="it", uid="u", namespace="default"),
            namespaces=NamespaceOptions(
                network=NamespaceMode.NODE, ipc=NamespaceMode.NODE, pid=NamespaceMode.CONTAINER
            ),
        ),
        state=SandboxState.READY,
        created_at_ns=0,
        runtime_handler="runc",
        cgroup_path="",
        resolv_conf_path=str(resolv_conf),
    )


def _remove_cgroups(cgroups_path: str) -> None:
    relative = cgroups_path.strip("/")
    for hierarchy in [*CGROUP_ROOT.iterdir(), CGROUP_ROOT]:
        top = hierarchy / relative
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda walk: -len(walk[0])):
            Path(dirpath).rmdir()


@pytest.fixture
def runc_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "runc-state"
    root.mkdir()
    yield root


def test_the_spec_runs_under_runc_as_the_resolved_user_without_new_privileges(
    tmp_path: Path, runc_root: Path
) -> None:
    assert RUNC is not None
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    _busybox_rootfs(rootfs)
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 192.0.2.1\n")
    config = ContainerConfig(
        name="it",
        image="busybox",
        command=["sh", "-c", "id -u; id -G; cat /proc/self/status | grep NoNewPrivs"],
        security=ContainerSecurity(run_as_username="app", no_new_privs=True),
    )
    container_id = f"moorage-it-{uuid.uuid4().hex[:12]}"
    cgroups_path = f"/moorage-test-{uuid.uuid4().hex[:12]}"
    profile = load_profile(SECCOMP_PROFILE) if SECCOMP_PROFILE.is_file() else None
    spec = build_spec(
        SpecInputs(
            container_id=container_id,
            config=config,
            image=ImageRuntimeConfig(env=["PATH=/bin"]),
            user=resolve_user(rootfs, config.security, ""),
            rootfs=str(rootfs),
            sandbox=_host_pod(resolv_conf),
            cgroups_path=cgroups_path,
            seccomp_profile=profile,
            oom_score_adj_min=int(Path("/proc/self/oom_score_adj").read_text()),
        )
    )
    (bundle / "config.json").write_text(json.dumps(spec))
    try:
        result = subprocess.run(
            [RUNC, "--root", str(runc_root), "run", "--bundle", str(bundle), container_id],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(
            [RUNC, "--root", str(runc_root), "delete", "-f", container_id],
            capture_output=True,
            check=False,
        )
        _remove_cgroups(cgroups_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "1000"
    assert lines[1].split() == ["1000", "2000"]
    assert lines[2].split() == ["NoNewPrivs:", "1"]
