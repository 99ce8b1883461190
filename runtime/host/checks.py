"""Host prerequisite probe behind `moorage check`.

Every check exercises the real mechanism (a container is run, an overlay is mounted, a namespace
is unshared) because a binary that is merely present can still be unusable on a given kernel.
Everything the probe creates lives in a fresh directory under the caller's work_dir and is
removed before `run_host_checks` returns.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from network.cni import CniNetwork, CniSettings
from network.errors import NetworkError
from runtime.host import linux
from runtime.host.cgroups import CgroupLayout, CgroupMode

_TIMEOUT = 5.0
_CONTAINER_TIMEOUT = 10.0
# `iptables -w 5` may legitimately hold for 5 s waiting on the xtables lock.
_IPTABLES_TIMEOUT = 10.0

_BUSYBOX = Path("/bin/busybox")
_REQUIRED_CONTROLLERS = ("cpu", "memory", "pids")
_NAMESPACES = ("net", "ipc", "uts", "pid", "mnt", "cgroup", "user")
_CRUN_HYBRID_ERROR = "cgroups in hybrid mode not supported"
# Root's PATH may lack the sbin directories when the agent is started from a bare environment.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")


@dataclass(frozen=True)
class HostCheck:
    name: str
    ok: bool
    required: bool
    detail: str
    fix: str = ""


def run_host_checks(
    runtimes: Mapping[str, Path],
    conmon: Path,
    seccomp_profile: Path,
    infra_binary: Path,
    work_dir: Path,
    *,
    cni: CniSettings | None = None,
) -> list[HostCheck]:
    """Probe the host; the first key of `runtimes` is the default handler. cni: the CNI
    settings when pods are networked by CNI plugins rather than the built-in bridge."""
    scratch = Path(tempfile.mkdtemp(prefix="hostcheck-", dir=work_dir))
    try:
        mounts = _read_mountinfo()
        cgroups = CgroupLayout.detect()
        checks = [
            _check_runtime(handler, binary, index == 0, cgroups, scratch)
            for index, (handler, binary) in enumerate(runtimes.items())
        ]
        checks += [
            _check_conmon(conmon),
            _check_cgroups(cgroups),
            _check_overlay(scratch, mounts),
            _check_iptables(),
            _check_seccomp(seccomp_profile),
            _check_namespaces(),
            _check_infra(infra_binary),
        ]
        if cni is not None:
            checks.append(check_cni(cni))
        return checks
    finally:
        shutil.rmtree(scratch)


def host_checks_pass(checks: Sequence[HostCheck]) -> bool:
    return all(check.ok for check in checks if check.required)


def format_host_checks(checks: Sequence[HostCheck]) -> str:
    lines = []
    for check in checks:
        if check.ok:
            lines.append(f"OK   {check.name}: {check.detail}")
        else:
            fix = f" (fix: {check.fix})" if check.fix else ""
            lines.append(f"FAIL {check.name}: {check.detail}{fix}")
    return "\n".join(lines)


# --- processes ---------------------------------------------------------------------------------


def _run(argv: Sequence[str | Path], timeout: float = _TIMEOUT) -> tuple[bool, str]:
    """Return (exited 0, stdout and stderr), or (False, why it could not run)."""
    try:
        proc = subprocess.run(
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"{argv[0]} did not finish within {timeout:g} s"
    except OSError as exc:
        return False, f"cannot run {argv[0]}: {exc.strerror}"
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def _which(name: str) -> Path | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    found = shutil.which(name, path=path)
    return Path(found) if found else None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _version(binary: Path) -> tuple[bool, str]:
    ok, out = _run([binary, "--version"])
    return ok, _first_line(out) if ok else out


# --- mounts and cgroups ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mount:
    point: Path
    fstype: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _read_mountinfo() -> list[_Mount]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = right.split(" ", 2)
        point = Path(_unescape(left.split(" ")[4]))
        mounts.append(_Mount(point, fstype, tuple(options.split(","))))
    return mounts


def _filesystem_of(path: Path, mounts: Sequence[_Mount]) -> str:
    containing = [m for m in mounts if path == m.point or m.point in path.parents]
    return max(containing, key=lambda m: len(m.point.parts)).fstype if containing else "unknown"


# --- checks ------------------------------------------------------------------------------------


def _check_runtime(
    handler: str, binary: Path, default: bool, cgroups: CgroupLayout, scratch: Path
) -> HostCheck:
    name = f"oci runtime {handler}"
    install = f"apt-get install {binary.name}, or point handler {handler!r} at a working binary"
    if not _is_executable(binary):
        role = "default handler" if default else "optional: not the default handler"
        detail = f"{binary} missing or not executable ({role})"
        return HostCheck(name, False, default, detail, install)
    ok, version = _version(binary)
    if not ok:
        return HostCheck(name, False, True, f"{binary} --version failed: {version}", install)
    started = time.monotonic()
    try:
        ok, out = _trial_container(binary, scratch, cgroups, None)
    except OSError as exc:
        detail = f"{version}; cannot build the test bundle from {_BUSYBOX}: {exc}"
        return HostCheck(name, False, True, detail, "apt-get install busybox-static")
    if ok:
        took = (time.monotonic() - started) * 1000
        return HostCheck(name, True, True, f"{version}; test container ran in {took:.0f} ms")
    fix = f"make `{binary} run` work on this host (see the error), or use another default handler"
    unified = cgroups.unified_root
    if _CRUN_HYBRID_ERROR in out and cgroups.mode is CgroupMode.HYBRID and unified is not None:
        ok, retry = _trial_container(binary, scratch, cgroups, unified)
        if ok:
            return HostCheck(
                name,
                True,
                True,
                f"{version}; refuses hybrid cgroups ({out}), so on this host moorage runs "
                f"`{binary.name} create` in a private mount namespace without {unified}, "
                "and a test container ran that way",
            )
        out = f"{out}; retry without {unified} also failed: {retry}"
    return HostCheck(name, False, True, f"{version}; test container failed: {out}", fix)


def _trial_container(
    runtime: Path, scratch: Path, cgroups: CgroupLayout, hide_mount: Path | None
) -> tuple[bool, str]:
    """Run busybox `true` in a throwaway bundle; hide_mount is unmounted in a private mount ns.

    Raises OSError when the bundle cannot be built.
    """
    container_id = f"moorage-hostcheck-{uuid.uuid4().hex[:12]}"
    base = Path(tempfile.mkdtemp(prefix="runtime-", dir=scratch))
    state = base / "state"
    bundle = base / "bundle"
    _build_bundle(bundle, container_id)
    state.mkdir()
    argv: list[str | Path] = [runtime, "--root", state, "run", "--bundle", bundle, container_id]
    if hide_mount is not None:
        argv = [
            _which("unshare") or "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            'umount "$0" && exec "$@"',
            hide_mount,
            *argv,
        ]
    try:
        return _run(argv, _CONTAINER_TIMEOUT)
    finally:
        _run([runtime, "--root", state, "delete", "-f", container_id])
        # A runtime that fails half way (e.g. after creating cgroups) leaves them behind.
        for hierarchy in cgroups.roots:
            with suppress(OSError):
                (hierarchy / container_id).rmdir()


def _build_bundle(bundle: Path, container_id: str) -> None:
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    # With a read-only root the runtimes cannot create these mount points themselves
    # (crun fails with "open /dev directory").
    (rootfs / "proc").mkdir()
    (rootfs / "dev").mkdir()
    try:
        os.link(_BUSYBOX, rootfs / "bin" / "busybox")
    except OSError:
        shutil.copy2(_BUSYBOX, rootfs / "bin" / "busybox")
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/busybox", "true"],
            "env": ["PATH=/bin"],
            "cwd": "/",
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "hostcheck",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            # Absolute, so the leftover sweep in _trial_container knows where to look.
            "cgroupsPath": f"/{container_id}",
            "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
        },
    }
    (bundle / "config.json").write_text(json.dumps(config))


def _check_conmon(conmon: Path) -> HostCheck:
    fix = "apt-get install conmon"
    if not _is_executable(conmon):
        return HostCheck("conmon", False, True, f"{conmon} missing or not executable", fix)
    ok, version = _version(conmon)
    if not ok:
        return HostCheck("conmon", False, True, f"{conmon} --version failed: {version}", fix)
    return HostCheck("conmon", True, True, f"{version} at {conmon}")


def _check_cgroups(cgroups: CgroupLayout) -> HostCheck:
    available = cgroups.controllers
    detail = f"{cgroups.describe()}; controllers: {' '.join(available) or 'none'}"
    missing = [c for c in _REQUIRED_CONTROLLERS if c not in available]
    if missing:
        fix = (
            f"enable and mount the {', '.join(missing)} controller(s): mount cgroup2 at "
            "/sys/fs/cgroup, or a cgroup v1 hierarchy per controller (check kernel cgroup_* "
            "boot parameters)"
        )
        return HostCheck("cgroups", False, True, f"{detail}; missing {' '.join(missing)}", fix)
    return HostCheck("cgroups", True, True, detail)


@contextmanager
def _mounted(source: str, target: Path, fstype: str, options: str) -> Iterator[None]:
    linux.mount(source, str(target), fstype, 0, options)
    try:
        yield
    finally:
        try:
            linux.umount(str(target))
        except OSError:
            # Busy: detach it anyway so removing the scratch tree cannot reach the layers.
            linux.umount(str(target), linux.MNT_DETACH)


def _check_overlay(scratch: Path, mounts: Sequence[_Mount]) -> HostCheck:
    fix = (
        "modprobe overlay (kernel needs CONFIG_OVERLAY_FS), and keep the state directory on a "
        "filesystem overlay accepts as upper layer (ext4, xfs, tmpfs)"
    )
    backing = _filesystem_of(scratch, mounts)
    base = scratch / "overlay"
    lower, upper, work, merged = (base / d for d in ("lower", "upper", "work", "merged"))
    try:
        for directory in (lower, upper, work, merged):
            directory.mkdir(parents=True)
        (lower / "probe").write_text("lower")
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        with _mounted("overlay", merged, "overlay", options):
            seen = (merged / "probe").read_text()
            (merged / "written").write_text("upper")
        if seen != "lower" or not (upper / "written").is_file():
            detail = "overlay mounted but did not merge its layers"
            return HostCheck("overlayfs", False, True, detail, fix)
    except OSError as exc:
        return HostCheck("overlayfs", False, True, f"overlay mount on {backing}: {exc}", fix)
    return HostCheck("overlayfs", True, True, f"mounted and unmounted an overlay on {backing}")


def _check_iptables() -> HostCheck:
    fix = "apt-get install iptables, and make the nat table available (modprobe iptable_nat)"
    iptables = _which("iptables")
    if iptables is None:
        return HostCheck("iptables", False, True, "iptables not found in PATH or sbin", fix)
    ok, out = _run([iptables, "-w", "5", "-t", "nat", "-S"], _IPTABLES_TIMEOUT)
    if not ok:
        return HostCheck("iptables", False, True, f"iptables -t nat -S failed: {out}", fix)
    _, version = _version(iptables)
    return HostCheck("iptables", True, True, f"{version}; nat table readable")


def _check_seccomp(profile: Path) -> HostCheck:
    name = "seccomp profile"
    fix = (
        f"apt-get install golang-github-containers-common (provides {profile}), or configure "
        "a valid OCI seccomp JSON profile"
    )
    try:
        document = json.loads(profile.read_text())
    except OSError as exc:
        return HostCheck(name, False, True, f"cannot read {profile}: {exc.strerror}", fix)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return HostCheck(name, False, True, f"{profile} is not JSON: {exc}", fix)
    if not isinstance(document, dict) or "defaultAction" not in document:
        return HostCheck(name, False, True, f"{profile} has no defaultAction", fix)
    syscalls = document.get("syscalls")
    rules = len(syscalls) if isinstance(syscalls, list) else 0
    detail = f"{profile}: defaultAction {document['defaultAction']}, {rules} syscall rules"
    return HostCheck(name, True, True, detail)


def _check_namespaces() -> HostCheck:
    missing = [ns for ns in _NAMESPACES if not os.path.exists(f"/proc/self/ns/{ns}")]
    if missing:
        detail = f"kernel lacks namespace(s): {' '.join(missing)}"
        fix = "use a kernel built with CONFIG_NAMESPACES and every CONFIG_*_NS option"
        return HostCheck("namespaces", False, True, detail, fix)
    ok, out = _run([_which("unshare") or "unshare", "--net", "--ipc", "--uts", "true"])
    if not ok:
        fix = "apt-get install util-linux, and run moorage as root (needs CAP_SYS_ADMIN)"
        return HostCheck("namespaces", False, True, f"unshare --net --ipc --uts: {out}", fix)
    return HostCheck("namespaces", True, True, f"{' '.join(_NAMESPACES)}; unshare works")


def check_cni(settings: CniSettings) -> HostCheck:
    """The configuration the agent would load, its plugins, and their own word on whether
    they are ready (CNI STATUS, for configurations of version 1.1.0 or later)."""
    network = CniNetwork(settings)
    with suppress(NetworkError):
        # A failure is kept for readiness(), which reports it below with the other causes.
        asyncio.run(network.status())
    readiness = network.readiness()
    config = network.current_config()
    if not readiness.ready or config is None:
        fix = (
            f"put a valid .conflist in {settings.conf_dir}, its plugins in "
            f"{' or '.join(str(d) for d in settings.bin_dirs)}, and start the daemons they need"
        )
        return HostCheck("cni network", False, True, readiness.message, fix)
    plugins = " ".join(p["type"] for p in config.plugins)
    detail = f"{config.name!r} (CNI {config.cni_version}) from {config.source}: {plugins}"
    return HostCheck("cni network", True, True, detail)


def _check_infra(infra_binary: Path) -> HostCheck:
    if not _is_executable(infra_binary):
        detail = f"{infra_binary} missing or not executable (pods sharing a PID namespace need it)"
        fix = "apt-get install catatonit, or point the infra binary setting at an init binary"
        return HostCheck("infra process", False, True, detail, fix)
    return HostCheck("infra process", True, True, f"{infra_binary} is executable")
