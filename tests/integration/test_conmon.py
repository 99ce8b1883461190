"""conmon, the OCI runtimes and the exit watcher on the real host: busybox containers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime.containers.exit_watcher import ExitWatcher
from runtime.host.processes import find_by_environment
from runtime.oci.conmon import (
    ConmonError,
    ConmonProcess,
    ContainerCreateError,
    create_container,
    exec_sync,
    reopen_log,
)
from runtime.oci.exit_files import exit_recorded, read_exit_file
from runtime.oci.runtime_cli import OciRuntime, OciRuntimeError
from tests.e2e.kernel import remove_cgroup_dir
from tests.waiting import wait_until_async

CONMON = Path(shutil.which("conmon") or "/usr/bin/conmon")
BUSYBOX = Path("/bin/busybox")
UNIFIED = Path("/sys/fs/cgroup/unified")
CGROUP_ROOT = Path("/sys/fs/cgroup")
REPO = Path(__file__).resolve().parents[2]
# RFC 3339 with nanoseconds and a numeric offset (conmon writes +00:00, not Z).
LOG_LINE = re.compile(r"^[\d-]{10}T[\d:]{8}\.\d{9}[+-]\d\d:\d\d (stdout|stderr) ([FP]) ")

pytestmark = [
    pytest.mark.skipif(not CONMON.is_file(), reason="needs conmon"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs busybox-static"),
]


@dataclass
class Host:
    """One test's runtime, directories and cgroup parent; everything is removed afterwards."""

    runtime: OciRuntime
    base: Path
    cgroup_parent: str
    ids: list[str] = field(default_factory=list)

    @property
    def exits(self) -> Path:
        return self.base / "exits"

    def bundle(self, args: list[str]) -> tuple[str, Path]:
        container_id = f"mt-{uuid.uuid4().hex[:12]}"
        self.ids.append(container_id)
        bundle = self.base / container_id
        rootfs = bundle / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        for directory in ("proc", "dev", "tmp"):
            (rootfs / directory).mkdir()
        # Hard links: busybox runs the applet named by argv[0], and a symlink made on the host
        # would point outside the rootfs.
        for applet in ("busybox", "sh", "echo", "printf", "sleep", "true", "cat"):
            try:
                os.link(BUSYBOX, rootfs / "bin" / applet)
            except OSError:
                shutil.copy2(BUSYBOX, rootfs / "bin" / applet)
        config = {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin"],
                "cwd": "/",
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "conmon-test",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {
                "cgroupsPath": f"{self.cgroup_parent}/{container_id}",
                "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
            },
        }
        (bundle / "config.json").write_text(json.dumps(config))
        return container_id, bundle

    async def create(self, args: list[str], *, log: bool = True) -> tuple[str, Path, ConmonProcess]:
        container_id, bundle = self.bundle(args)
        process = await create_container(
            CONMON,
            self.runtime,
            container_id=container_id,
            bundle=bundle,
            log_path=bundle / "ctr.log" if log else None,
            exit_dir=self.exits,
            socket_dir=self.base / "attach",
            tty=False,
            stdin=False,
            stdin_once=False,
        )
        return container_id, bundle, process

    def cleanup(self) -> None:
        for container_id in self.ids:
            conmon_pid = _conmon_pid(self.base / container_id)
            subprocess.run(
                [self.runtime.binary, "--root", self.runtime.state_root, "delete", "-f",
                 container_id],
                capture_output=True,
                check=False,
            )  # fmt: skip
            if conmon_pid is not None:
                _kill(conmon_pid)
        _remove_cgroups(self.cgroup_parent)
        shutil.rmtree(self.base, ignore_errors=True)


def _handler_params() -> list[object]:
    crun = shutil.which("crun")
    return [
        pytest.param("runc", id="runc"),
        pytest.param(
            "crun", id="crun", marks=pytest.mark.skipif(crun is None, reason="crun not installed")
        ),
    ]


@pytest.fixture(params=_handler_params())
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    name = str(request.param)
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} not installed")
    # crun 1.8 refuses to create containers on a hybrid host (FIELD-NOTES).
    hide = UNIFIED if name == "crun" and os.path.ismount(UNIFIED) else None
    base = Path(f"/tmp/mct-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    runtime = OciRuntime(
        name, Path(binary), base / "oci" / name, base / "oci" / "wrappers", hide_mount=hide
    )
    found = Host(runtime, base, f"/moorage-test-{uuid.uuid4().hex[:8]}")
    try:
        yield found
    finally:
        found.cleanup()


# -- helpers --------------------------------------------------------------------------------


def _conmon_pid(bundle: Path) -> int | None:
    try:
        return int((bundle / "conmon.pid").read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Running and not a zombie (PID 1 here reaps orphans late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _kill(pid: int) -> None:
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "conmon":
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _conmons_for(container_id: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"conmon") and container_id.encode() in argv:
                found.append(int(entry.name))
    return [pid for pid in found if _alive(pid)]


def _remove_cgroups(parent: str) -> None:
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / parent.strip("/")
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            remove_cgroup_dir(Path(dirpath), timeout_s=1.0)


def _exit_recorded(exits: Path, container_id: str) -> Callable[[], bool]:
    return lambda: exit_recorded(exits / container_id)


def _log_records(log_path: Path) -> list[tuple[str, str, str]]:
    records = []
    for line in log_path.read_text().splitlines():
        match = LOG_LINE.match(line)
        assert match, f"not a k8s-file record: {line!r}"
        records.append((match.group(1), match.group(2), line[match.end() :]))
    return records


# -- tests --------------------------------------------------------------------------------------


async def test_output_is_logged_and_the_exit_code_reported_at_once(host: Host) -> None:
    reported: dict[str, tuple[int, float]] = {}
    watcher = ExitWatcher(host.exits, lambda cid, code: reported.update({cid: (code, time.time())}))
    watcher.start()
    try:
        container_id, bundle, process = await host.create(
            ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]
        )
        assert process.pid > 0 and process.conmon_pid > 0
        await host.runtime.start(container_id)
        assert await wait_until_async(lambda: container_id in reported)
    finally:
        watcher.close()
    code, seen_at = reported[container_id]
    assert code == 3
    recorded = read_exit_file(host.exits / container_id)
    assert recorded is not None and recorded.code == 3
    assert seen_at - recorded.written_at_ns / 1e9 < 0.1
    assert _log_records(bundle / "ctr.log") == [("stdout", "F", "out"), ("stderr", "F", "err")]


async def test_exit_files_already_present_are_reported_on_start(host: Host) -> None:
    host.exits.mkdir(parents=True)
    (host.exits / "earlier").write_text("137")
    (host.exits / "later.Ab3XyZ").write_text("0")  # conmon's temporary file before its rename
    reported: list[tuple[str, int]] = []
    watcher = ExitWatcher(host.exits, lambda cid, code: reported.append((cid, code)))
    watcher.start()
    watcher.close()
    assert reported == [("earlier", 137)]
    assert read_exit_file(host.exits / "never-ran") is None


async def test_output_without_a_trailing_newline_is_a_partial_record(host: Host) -> None:
    container_id, bundle, _ = await host.create(["/bin/sh", "-c", "printf 'no newline'"])
    await host.runtime.start(container_id)
    assert await wait_until_async(_exit_recorded(host.exits, container_id))
    assert _log_records(bundle / "ctr.log") == [("stdout", "P", "no newline")]


async def test_exec_sync_returns_output_and_exit_code(host: Host) -> None:
    container_id, bundle, _ = await host.create(["/bin/sleep", "60"])
    await host.runtime.start(container_id)
    spec = process(["/bin/sh", "-c", "echo hi; echo oops >&2; printf 0123456789abc; exit 7"])
    result = await exec_sync(
        CONMON, host.runtime, container_id=container_id, bundle=bundle, process_spec=spec,
        timeout_s=10, output_cap=8,
    )  # fmt: skip
    assert (result.exit_code, result.timed_out) == (7, False)
    assert (result.stdout, result.stderr) == (b"hi\n01234", b"oops\n")
    assert not [p for p in bundle.iterdir() if p.name.startswith("exec-")]
    # The container's own conmon still owns the ctl FIFO: exec must not have replaced it.
    reopen_log(bundle / "ctl")


async def test_exec_sync_past_its_deadline_kills_the_process(host: Host) -> None:
    container_id, bundle, _ = await host.create(["/bin/sleep", "60"])
    await host.runtime.start(container_id)
    marker = uuid.uuid4().hex
    spec = process(["/bin/sleep", "60"], env=[f"MOORAGE_EXEC_MARKER={marker}"])
    started = time.monotonic()
    result = await exec_sync(
        CONMON, host.runtime, container_id=container_id, bundle=bundle, process_spec=spec,
        timeout_s=1,
    )  # fmt: skip
    assert result.timed_out
    assert time.monotonic() - started < 4
    assert await wait_until_async(
        lambda: not find_by_environment("MOORAGE_EXEC_MARKER", marker), 2.0
    )


async def test_reopen_log_after_rotation_writes_a_new_file(host: Host) -> None:
    script = "while true; do echo tick; sleep 0.05; done"
    container_id, bundle, _ = await host.create(["/bin/sh", "-c", script])
    await host.runtime.start(container_id)
    log_path = bundle / "ctr.log"
    assert await wait_until_async(lambda: log_path.exists() and log_path.stat().st_size > 0)
    log_path.rename(bundle / "ctr.log.1")
    reopen_log(bundle / "ctl")
    assert await wait_until_async(lambda: log_path.exists() and "tick" in log_path.read_text())
    assert ("stdout", "F", "tick") in _log_records(log_path)


def test_reopen_log_without_conmon_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConmonError, match="ctl"):
        reopen_log(tmp_path / "ctl")
    os.mkfifo(tmp_path / "ctl")
    with pytest.raises(ConmonError, match="conmon is not running"):
        reopen_log(tmp_path / "ctl")


_AGENT = """
import asyncio, json, sys
from pathlib import Path
from runtime.oci.conmon import create_container
from runtime.oci.runtime_cli import OciRuntime, OciRuntimeError

a = json.loads(sys.argv[1])
async def main():
    hide = Path(a["hide"]) if a["hide"] else None
    runtime = OciRuntime(
        a["name"], Path(a["binary"]), Path(a["root"]), Path(a["wrappers"]), hide_mount=hide
    )
    p = await create_container(
        Path(a["conmon"]), runtime, container_id=a["id"], bundle=Path(a["bundle"]),
        log_path=None, exit_dir=Path(a["exits"]), socket_dir=Path(a["attach"]),
        tty=False, stdin=False, stdin_once=False,
    )
    await runtime.start(a["id"])
    print(p.conmon_pid, p.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def _create_from_an_agent_then_kill_it(
    host: Host, container_id: str, bundle: Path
) -> tuple[int, list[int]]:
    """Create and start the container from a child process, then kill -9 its process group;
    returns the child's session and the (conmon, container) pids it printed."""
    runtime = host.runtime
    arguments = {
        "name": runtime.name,
        "binary": str(runtime.binary),
        "root": str(runtime.state_root),
        "wrappers": str(runtime.wrapper_dir),
        "hide": str(runtime.hide_mount or ""),
        "conmon": str(CONMON),
        "id": container_id,
        "bundle": str(bundle),
        "exits": str(host.exits),
        "attach": str(host.base / "attach"),
    }
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT, json.dumps(arguments)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert agent.stdout is not None
        return agent.pid, [int(pid) for pid in agent.stdout.readline().split()]
    finally:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()


async def test_killing_the_agent_does_not_stop_the_container(host: Host) -> None:
    """conmon runs in its own session: a kill -9 of its launcher (and its group) spares it."""
    container_id, bundle = host.bundle(["/bin/sleep", "60"])
    agent_session, pids = await asyncio.to_thread(
        _create_from_an_agent_then_kill_it, host, container_id, bundle
    )
    assert len(pids) == 2
    # Outside the killed group for good, not only not dead yet: the kill reached the group
    # before the launcher was reaped, and conmon's session is its own.
    assert all(os.getsid(pid) != agent_session for pid in pids)
    assert all(_alive(pid) for pid in pids)
    state = await host.runtime.state(container_id)
    assert state is not None and state["status"] == "running"


async def test_create_failure_raises_the_runtime_message_and_leaves_nothing(host: Host) -> None:
    with pytest.raises(ContainerCreateError, match="nonexistent") as raised:
        await host.create(["/bin/nonexistent"])
    container_id = host.ids[-1]
    assert "conmon" not in str(raised.value)
    assert await wait_until_async(lambda: not _conmons_for(container_id), 2.0)
    assert await host.runtime.state(container_id) is None
    assert not (host.runtime.state_root / container_id).exists()


async def test_update_below_usage_is_refused_with_the_runtime_message(host: Host) -> None:
    container_id, _, _ = await host.create(["/bin/sleep", "60"])
    await host.runtime.start(container_id)
    await host.runtime.update(container_id, {"cpu": {"shares": 512}})
    with pytest.raises(OciRuntimeError) as refused:
        await host.runtime.update(container_id, {"memory": {"limit": 4096, "swap": 4096}})
    assert refused.value.subcommand.endswith("update")
    assert "4096" in refused.value.stderr or "busy" in refused.value.stderr.lower()


async def test_unknown_containers_have_no_state_and_delete_quietly(host: Host) -> None:
    assert await host.runtime.state("mt-never-created") is None
    await host.runtime.delete("mt-never-created", force=True)
    await host.runtime.delete("mt-never-created")
    with pytest.raises(OciRuntimeError):
        await host.runtime.start("mt-never-created")


def process(args: list[str], env: list[str] | None = None) -> dict[str, object]:
    return {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin", *(env or [])],
        "cwd": "/",
    }
