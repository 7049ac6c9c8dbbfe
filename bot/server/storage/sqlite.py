"""The embedded backend: one SQLite file (WAL mode) under ``SLUICE_DATA_DIR``.

One node only: SQLite's single write lock serializes every write transaction,
which is what makes claims, fences, locks and the write budget atomic here.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from bot.server.storage.base import Conflict, Cursor, Database, StorageError, Tx


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self._conn.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except sqlite3.Error as exc:
            raise StorageError(f"database error: {exc}") from exc

    def lock(self, name: str) -> None:
        del name  # BEGIN IMMEDIATE already holds the only write lock

    def notify(self, channel: str) -> None:
        del channel  # one node: the pool polls, and the dev server wakes it in-process


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        #: FULL: an acknowledged delivery survives a power cut; NORMAL: a crash of Sluice.
        self.synchronous = synchronous
        self._local = threading.local()
        # Threads of one process wait for each other here, not in SQLite's busy handler,
        # which sleeps in growing steps (up to 100 ms) and made intake p99 latency spike.
        self._write_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection().execute("PRAGMA journal_mode=WAL")

    def connection(self) -> sqlite3.Connection:
        """This thread's connection; a fresh one after fork (connections don't survive it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous={'NORMAL' if self.synchronous == 'NORMAL' else 'FULL'}")
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        conn = self.connection()
        with self._write_lock:
            self._begin_immediate(conn)
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StorageError(f"commit failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[Tx]:
        yield _SqliteTx(self.connection())  # autocommit: WAL readers never block

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        """Take the write lock, polling every few hundred microseconds.

        Another process (the job pool) may hold it. SQLite's own busy handler sleeps
        in growing steps of up to 100 ms, far longer than a write takes here.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.0002
        conn.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise StorageError(f"database is busy: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")

    def ping(self) -> tuple[bool, str]:
        try:
            self.connection().execute("SELECT 1").fetchone()
        except (sqlite3.Error, StorageError) as exc:
            return False, f"database unavailable: {exc}"
        return True, "database ok"

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def describe(self) -> str:
        return f"SQLite {self.path}"
