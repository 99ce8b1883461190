"""The durable state: one sqlite file in WAL mode, one JSON record per object.

WAL with synchronous=NORMAL keeps every committed row across a crash of the agent
(kill -9) without an fsync per call; only a power loss may lose the last commits.

Writes never run on the event loop: put(), delete(), claim(), release() and put_setting()
queue the statement for one writer thread, which commits them in order, those queued
together in one transaction, and runs the WAL checkpoints. A call that changed state awaits
`track_writes().durable()` before it answers (the CRI interceptor does it for every call),
so what it wrote is on disk, or its failure reported, before the caller hears back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_TABLES = ("sandboxes", "containers", "images")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ip_allocations (
    address TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Pages of WAL after which the writer checkpoints (sqlite's default): on the writer's own
# connection, so a checkpoint delays the writes queued behind it, never a read.
_WAL_AUTOCHECKPOINT_PAGES = 1000


class StateWriteError(Exception):
    """A state change that could not be committed to state.db."""


@dataclass
class _Write:
    db: StateDB
    sequence: int
    statement: str
    params: tuple[str, ...]
    error: sqlite3.Error | None = None


@dataclass
class WriteTracker:
    """The writes made within one call (its context, threads it started included)."""

    writes: list[_Write] = field(default_factory=list)

    async def durable(self) -> None:
        """Return once every write so far is committed; raise if one of them failed."""
        if not self.writes:
            return
        writes, self.writes = self.writes, []
        last: dict[StateDB, int] = {}
        for write in writes:
            last[write.db] = write.sequence
        for db, sequence in last.items():
            await db.reached(sequence)
        failed = [w for w in writes if w.error is not None]
        if failed:
            raise StateWriteError(
                f"{len(failed)} of {len(writes)} state change(s) not saved in state.db: "
                f"{failed[0].error}"
            )


_tracker: contextvars.ContextVar[WriteTracker | None] = contextvars.ContextVar(
    "moorage_state_writes", default=None
)


class track_writes:  # named as a function: it is used like contextlib's managers
    """Collect the writes made in this context until it ends, for durable() to await.

    A class, not a generator: it wraps every CRI call, and a generator costs twice as much.
    """

    def __enter__(self) -> WriteTracker:
        tracker = WriteTracker()
        self._token = _tracker.set(tracker)
        return tracker

    def __exit__(self, *exc_info: object) -> None:
        _tracker.reset(self._token)


async def written_ahead() -> None:
    """Await the writes this call has made so far (none outside a tracked call).

    For the rows that must be on disk before the host objects they name are made: recovery
    after a kill -9 finds a half-built pod or container by its CREATING row.
    """
    tracker = _tracker.get()
    if tracker is not None:
        await tracker.durable()


class StateDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = _connect(path)
        self._conn.executescript(_SCHEMA)
        self._settings = dict(self._conn.execute("SELECT key, value FROM settings").fetchall())
        writer = _connect(path)
        writer.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        # Guards the sequence numbers and the waiters; never held while sqlite works.
        self._lock = threading.Lock()
        self._submitted = 0
        self._committed = 0
        self._idle = threading.Condition(self._lock)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, args=(writer,), name="state-db-writer", daemon=True
        )
        self._writer.start()

    # -- reads: start-up and recovery only, so they wait for the writes queued before them

    def records(self, table: str) -> list[str]:
        assert table in _TABLES
        self.wait_written()
        return [row[0] for row in self._conn.execute(f"SELECT record FROM {table}")]

    def named_records(self, table: str) -> list[tuple[str, str]]:
        assert table in _TABLES
        self.wait_written()
        return list(self._conn.execute(f"SELECT name, record FROM {table}"))

    def allocations(self) -> dict[str, str]:
        """The IP ledger: address -> sandbox id."""
        self.wait_written()
        return dict(self._conn.execute("SELECT address, owner FROM ip_allocations").fetchall())

    def setting(self, key: str) -> str | None:
        """From memory: Status reads the pod CIDR on every call."""
        return self._settings.get(key)

    # -- writes: queued, in order

    def put(self, table: str, object_id: str, name: str, record: str) -> None:
        assert table in _TABLES
        self._submit(
            f"INSERT OR REPLACE INTO {table} (id, name, record) VALUES (?, ?, ?)",
            (object_id, name, record),
        )

    def delete(self, table: str, object_id: str) -> None:
        assert table in _TABLES
        self._submit(f"DELETE FROM {table} WHERE id = ?", (object_id,))

    def put_setting(self, key: str, value: str) -> None:
        self._settings[key] = value
        self._submit("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def claim(self, address: str, owner: str) -> None:
        self._submit("INSERT INTO ip_allocations (address, owner) VALUES (?, ?)", (address, owner))

    def release(self, owner: str) -> None:
        self._submit("DELETE FROM ip_allocations WHERE owner = ?", (owner,))

    async def flushed(self) -> None:
        """Return once every write queued so far is committed (or has failed)."""
        with self._lock:
            sequence = self._submitted
        await self.reached(sequence)

    async def reached(self, sequence: int) -> None:
        with self._lock:
            if self._committed >= sequence:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((sequence, waiter))
        await waiter

    def close(self) -> None:
        """Commit what is queued, then close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._conn.close()

    def _submit(self, statement: str, params: tuple[str, ...]) -> None:
        with self._lock:
            if self._closed:
                raise StateWriteError(f"state.db is closed: {_verb(statement)} refused")
            self._submitted += 1
            write = _Write(self, self._submitted, statement, params)
            # Under the lock, so the queue's order is the sequence's.
            self._queue.put(write)
        tracker = _tracker.get()
        if tracker is not None:
            tracker.writes.append(write)

    def wait_written(self) -> None:
        """Block until every write queued so far is committed (or has failed)."""
        with self._idle:
            self._idle.wait_for(lambda: self._committed >= self._submitted)

    # -- the writer thread

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while (first := self._queue.get()) is not None:
                batch = [first]
                stop = False
                while not stop:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                    else:
                        batch.append(more)
                _commit(conn, batch)
                self._done(batch[-1].sequence)
                if stop:
                    break
        finally:
            conn.close()

    def _done(self, sequence: int) -> None:
        with self._lock:
            self._committed = sequence
            ready = [w for s, w in self._waiters if s <= sequence]
            self._waiters = [(s, w) for s, w in self._waiters if s > sequence]
            self._idle.notify_all()
        for waiter in ready:
            with contextlib.suppress(RuntimeError):
                # A loop that closed meanwhile has no one left to tell.
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _commit(conn: sqlite3.Connection, batch: list[_Write]) -> None:
    """All of batch in one transaction; if any statement fails, each in its own, so one bad
    write fails alone and the rest keep their order."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for write in batch:
            conn.execute(write.statement, write.params)
        conn.execute("COMMIT")
        return
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    for write in batch:
        try:
            conn.execute(write.statement, write.params)
        except sqlite3.Error as exc:
            write.error = exc
            log.error("state.db write failed", statement=_verb(write.statement), error=str(exc))


def _verb(statement: str) -> str:
    """The statement without its values, for messages."""
    return statement.partition(" (")[0]


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
