"""The durable state: one sqlite file in WAL mode, one JSON record per object.

WAL with synchronous=NORMAL keeps every committed row across a crash of the agent
(kill -9) without an fsync per call; only a power loss may lose the last commits.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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


class StateDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def records(self, table: str) -> list[str]:
        assert table in _TABLES
        return [row[0] for row in self._conn.execute(f"SELECT record FROM {table}")]

    def named_records(self, table: str) -> list[tuple[str, str]]:
        assert table in _TABLES
        return list(self._conn.execute(f"SELECT name, record FROM {table}"))

    def put(self, table: str, object_id: str, name: str, record: str) -> None:
        assert table in _TABLES
        self._conn.execute(
            f"INSERT OR REPLACE INTO {table} (id, name, record) VALUES (?, ?, ?)",
            (object_id, name, record),
        )

    def delete(self, table: str, object_id: str) -> None:
        assert table in _TABLES
        self._conn.execute(f"DELETE FROM {table} WHERE id = ?", (object_id,))

    def setting(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_setting(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value)
        )

    def allocations(self) -> dict[str, str]:
        """The IP ledger: address -> sandbox id."""
        return dict(self._conn.execute("SELECT address, owner FROM ip_allocations").fetchall())

    def claim(self, address: str, owner: str) -> None:
        self._conn.execute(
            "INSERT INTO ip_allocations (address, owner) VALUES (?, ?)", (address, owner)
        )

    def release(self, owner: str) -> None:
        self._conn.execute("DELETE FROM ip_allocations WHERE owner = ?", (owner,))

    def close(self) -> None:
        self._conn.close()
