"""The replicated backend: PostgreSQL through psycopg 3 and a psycopg-pool connection pool.

Every replica of ``sluice serve`` connects to the same database. Row locks
(``FOR UPDATE SKIP LOCKED``), a partial unique index (one running job per PR) and
transaction-scoped advisory locks make claims, fences, deploy locks and the write
budget atomic across replicas; ``LISTEN``/``NOTIFY`` wakes idle workers.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from bot.server.storage.base import Conflict, Cursor, Database, Listener, StorageError, Tx

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\?")
CONNECT_TIMEOUT_S = 5


def _translate(sql: str) -> str:
    return _PLACEHOLDER.sub("%s", sql)


class _PgTx(Tx):
    def __init__(self, conn: psycopg.Connection[Any]):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self._conn.execute(_translate(sql), tuple(params))  # type: ignore[arg-type]
        except pg_errors.UniqueViolation as exc:
            raise Conflict(_first_line(exc)) from exc
        except psycopg.Error as exc:
            raise StorageError(f"database error: {_first_line(exc)}") from exc

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (name,))

    def notify(self, channel: str) -> None:
        self.execute("SELECT pg_notify(?, '')", (channel,))


class PostgresDatabase(Database):
    dialect = "postgres"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 10,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if urlsplit(url).scheme not in ("postgresql", "postgres"):
            raise ValueError("SLUICE_DATABASE_URL must start with postgresql://")
        self._url = url
        self._max = max_connections
        # NORMAL, like SQLite's: a commit survives a crash of Sluice, and a crash of the
        # database server may lose the last moment of commits (synchronous_commit=off
        # never corrupts anything). FULL waits for the WAL flush (and any sync replica).
        self._options = "-c synchronous_commit=off" if synchronous == "NORMAL" else ""
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._pid = 0

    def _connections(self) -> ConnectionPool:
        """This process's pool: a pool does not survive fork."""
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._max,
                    kwargs={
                        # Reads and one-statement writes need no BEGIN/COMMIT round trips;
                        # ``transaction`` opens an explicit one.
                        "autocommit": True,
                        "row_factory": dict_row,
                        "connect_timeout": CONNECT_TIMEOUT_S,
                        "options": self._options,
                    },
                    check=ConnectionPool.check_connection,
                    timeout=CONNECT_TIMEOUT_S * 2,
                    name="sluice",
                    open=True,
                )
                self._pid = os.getpid()
            return self._pool

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        try:
            with self._connections().connection() as conn, conn.transaction():
                yield _PgTx(conn)
        except PoolTimeout as exc:
            raise StorageError(f"no database connection: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"database error: {_first_line(exc)}") from exc

    @contextmanager
    def read(self) -> Iterator[Tx]:
        try:
            with self._connections().connection() as conn:
                yield _PgTx(conn)
        except PoolTimeout as exc:
            raise StorageError(f"no database connection: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"database error: {_first_line(exc)}") from exc

    def ping(self) -> tuple[bool, str]:
        try:
            with self._connections().connection(timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute("SELECT 1").fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            return False, f"database unavailable: {_first_line(exc)}"
        return True, "database ok"

    def listen(self, channel: str, callback: Callable[[], None]) -> Listener:
        stop = threading.Event()
        thread = threading.Thread(
            target=self._listen, args=(channel, callback, stop), name="sluice-listen", daemon=True
        )
        thread.start()
        return Listener(stop=stop.set)

    def _listen(self, channel: str, callback: Callable[[], None], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    conn.execute(f"LISTEN {channel}")
                    callback()  # anything enqueued while we were not listening
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            callback()
            except psycopg.Error as exc:
                log.warning("LISTEN %s failed (%s); polling until it is back", channel, exc)
                stop.wait(2.0)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close()
            self._pool = None

    def describe(self) -> str:
        parts = urlsplit(self._url)
        return f"PostgreSQL {parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _first_line(exc: BaseException) -> str:
    """The error's first line: psycopg messages never carry the password, but keep it short."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
