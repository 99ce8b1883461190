"""state.db's writer thread: writes land in order, a call's writes are on disk once it has
awaited them, and a write that fails is reported to the call that made it."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.state.db import StateDB, StateWriteError, track_writes


def _rows(db_path: Path, table: str) -> dict[str, str]:
    """What another process would read: a connection of its own, no waiting for the writer."""
    conn = sqlite3.connect(db_path)
    try:
        if table == "ip_allocations":
            return dict(conn.execute("SELECT address, owner FROM ip_allocations"))
        return dict(conn.execute(f"SELECT id, record FROM {table}"))
    finally:
        conn.close()


async def test_writes_are_committed_in_the_order_they_were_made(db: StateDB, db_path: Path) -> None:
    for version in range(500):
        db.put("sandboxes", "pod", "pod-name", f"v{version}")
    db.put("sandboxes", "gone", "gone-name", "x")
    db.delete("sandboxes", "gone")
    await db.flushed()

    assert _rows(db_path, "sandboxes") == {"pod": "v499"}


async def test_a_call_sees_its_writes_on_disk_once_durable_returns(
    db: StateDB, db_path: Path
) -> None:
    with track_writes() as writes:
        db.put("containers", "c1", "c1-name", "record")
        # Made in a worker thread of the call, as store updates from to_thread are.
        await asyncio.to_thread(db.claim, "10.0.0.2", "pod")
        await writes.durable()

        assert _rows(db_path, "containers") == {"c1": "record"}
        assert _rows(db_path, "ip_allocations") == {"10.0.0.2": "pod"}


async def test_a_failing_write_is_an_error_of_the_call_that_made_it(
    db: StateDB, db_path: Path
) -> None:
    db.claim("10.0.0.2", "pod-a")
    with track_writes() as writes:
        db.put("sandboxes", "before", "before-name", "kept")
        db.claim("10.0.0.2", "pod-b")
        db.put("sandboxes", "after", "after-name", "kept")
        with pytest.raises(StateWriteError, match="UNIQUE"):
            await writes.durable()

    # The good writes around the bad one stay, in order.
    assert _rows(db_path, "sandboxes") == {"before": "kept", "after": "kept"}
    assert _rows(db_path, "ip_allocations") == {"10.0.0.2": "pod-a"}


async def test_another_calls_failed_write_does_not_fail_this_one(db: StateDB) -> None:
    db.claim("10.0.0.2", "pod-a")
    with track_writes() as writes:
        db.put("sandboxes", "mine", "mine-name", "record")
        with track_writes() as other:
            db.claim("10.0.0.2", "pod-b")
        await writes.durable()
        with pytest.raises(StateWriteError):
            await other.durable()


def test_start_up_reads_see_every_write_made_before_them(db: StateDB) -> None:
    db.put("images", "sha256:1", "sha256:1", "image")
    db.claim("10.0.0.3", "pod")
    db.put_setting("pod_cidr", "10.1.0.0/16")

    assert db.records("images") == ["image"]
    assert db.allocations() == {"10.0.0.3": "pod"}
    assert db.setting("pod_cidr") == "10.1.0.0/16"


def test_closing_commits_what_is_queued_and_refuses_more(db_path: Path) -> None:
    db = StateDB(db_path)
    for i in range(100):
        db.put("containers", f"c{i}", f"name-{i}", "record")
    db.close()

    assert len(_rows(db_path, "containers")) == 100
    with pytest.raises(StateWriteError, match="closed"):
        db.put("containers", "late", "late-name", "record")


def test_a_setting_survives_reopening(db_path: Path) -> None:
    db = StateDB(db_path)
    db.put_setting("pod_cidr", "10.9.0.0/16")
    db.close()

    reopened = StateDB(db_path)
    try:
        assert reopened.setting("pod_cidr") == "10.9.0.0/16"
    finally:
        reopened.close()


def test_every_write_of_a_call_that_returned_survives_kill_9(db_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from pathlib import Path
        from runtime.state.db import StateDB, track_writes

        async def call(db, i):
            with track_writes() as writes:
                db.put("containers", f"c{{i}}", f"name-{{i}}", "record")
                db.claim(f"10.0.{{i // 250}}.{{i % 250 + 2}}", f"c{{i}}")
                await writes.durable()

        async def main():
            db = StateDB(Path({str(db_path)!r}))
            for i in range(200):
                await call(db, i)
            print("returned", flush=True)
            # Writes nobody waits for, still queued or being written at the kill.
            for i in range(200, 5000):
                db.put("containers", f"c{{i}}", f"name-{{i}}", "record")
            time.sleep(60)

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "returned"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    containers = _rows(db_path, "containers")
    assert all(f"c{i}" in containers for i in range(200))
    assert len(_rows(db_path, "ip_allocations")) == 200


async def test_a_write_waiting_for_a_locked_database_does_not_hold_up_the_caller(
    db: StateDB, db_path: Path
) -> None:
    """Regression (issue 19): put() ran on the event loop and waited there for the lock."""
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with track_writes() as writes:
            db.put("sandboxes", "pod", "pod-name", "record")
            # The caller goes on (here: straight to the end of its lock) while the writer waits.
            assert db.setting("pod_cidr") is None
    finally:
        holder.execute("COMMIT")
        holder.close()

    await writes.durable()
    assert _rows(db_path, "sandboxes") == {"pod": "record"}
