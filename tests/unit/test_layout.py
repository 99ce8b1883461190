"""Every on-disk path, spelled out: recovery finds an older agent's state by these, so a change
here strands pods and containers on upgrade."""

from __future__ import annotations

from pathlib import Path

from runtime.layout import Layout
from runtime.settings import RuntimeSettings

LAYOUT = Layout(Path("/var/lib/moorage"), Path("/run/moorage"))


def test_the_settings_layout_is_over_the_configured_dirs() -> None:
    settings = RuntimeSettings(root_dir=Path("/srv/m"), run_dir=Path("/run/m"))
    assert settings.layout == Layout(Path("/srv/m"), Path("/run/m"))
    assert RuntimeSettings().layout == LAYOUT


def test_agent_wide_paths() -> None:
    assert {
        "state.db": LAYOUT.state_db,
        "lock": LAYOUT.lock_file,
        "content": LAYOUT.content_dir,
        "layers": LAYOUT.layers_dir,
        "cni": LAYOUT.cni_cache_dir,
        "exits": LAYOUT.exits_dir,
        "attach": LAYOUT.attach_dir,
        "crun": LAYOUT.oci_state_dir("crun"),
        "wrappers": LAYOUT.oci_wrappers_dir,
    } == {
        "state.db": Path("/var/lib/moorage/state.db"),
        "lock": Path("/var/lib/moorage/moorage.lock"),
        "content": Path("/var/lib/moorage/content"),
        "layers": Path("/var/lib/moorage/layers"),
        "cni": Path("/var/lib/moorage/cni"),
        "exits": Path("/run/moorage/exits"),
        "attach": Path("/run/moorage/attach"),
        "crun": Path("/run/moorage/oci/crun"),
        "wrappers": Path("/run/moorage/oci/wrappers"),
    }


def test_sandbox_paths() -> None:
    pod = LAYOUT.sandbox("p1")
    assert (pod.dir, pod.run_dir, pod.shm, pod.resolv_conf) == (
        Path("/var/lib/moorage/sandboxes/p1"),
        Path("/run/moorage/sandboxes/p1"),
        Path("/run/moorage/sandboxes/p1/shm"),
        Path("/var/lib/moorage/sandboxes/p1/resolv.conf"),
    )
    assert pod.dir.parent == LAYOUT.sandboxes_dir
    assert pod.run_dir.parent == LAYOUT.sandboxes_run_dir
    assert [LAYOUT.pin_path(kind, "p1") for kind in ("net", "ipc", "uts", "user")] == [
        Path("/run/moorage/netns/p1"),
        Path("/run/moorage/ipcns/p1"),
        Path("/run/moorage/utsns/p1"),
        Path("/run/moorage/userns/p1"),
    ]
    assert LAYOUT.pin_dir("net") == Path("/run/moorage/netns")


def test_container_paths() -> None:
    paths = LAYOUT.container("c1")
    assert [paths.bundle, paths.upper, paths.work, paths.config, paths.ctl] == [
        Path("/var/lib/moorage/containers/c1"),
        Path("/var/lib/moorage/containers/c1/upper"),
        Path("/var/lib/moorage/containers/c1/work"),
        Path("/var/lib/moorage/containers/c1/config.json"),
        Path("/var/lib/moorage/containers/c1/ctl"),
    ]
    assert [paths.rootfs, paths.volumes] == [
        Path("/run/moorage/containers/c1/rootfs"),
        Path("/run/moorage/containers/c1/volumes"),
    ]
    assert paths.bundle.parent == LAYOUT.containers_dir
    assert paths.rootfs.parent.parent == LAYOUT.containers_run_dir
    assert LAYOUT.exit_file("c1") == Path("/run/moorage/exits/c1")
    assert LAYOUT.attach_link("c1") == Path("/run/moorage/attach/c1")
    assert LAYOUT.attach_socket("c1") == Path("/run/moorage/attach/c1/attach")
