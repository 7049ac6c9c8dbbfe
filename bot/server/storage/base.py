"""The storage seam: one ``Database`` interface, two backends (SQLite and PostgreSQL).

Everything durable the bot keeps goes through a ``Database``: the job queue,
leases and fencing, outcome counters, the override audit table, pins, the deploy
log, the per-app deploy locks and the forge write budget. Callers write portable
SQL with ``?`` placeholders; a backend translates what differs (placeholders,
row locking, advisory locks, notifications).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgres"]
#: The channel idle workers listen on (PostgreSQL); intake notifies it on each new job.
JOBS_CHANNEL = "sluice_jobs"


class StorageError(RuntimeError):
    """The database failed or could not be reached (the caller may answer 503)."""


class Conflict(StorageError):
    """A uniqueness rule refused the write (another replica got there first)."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Mapping[str, Any] | None: ...

    def fetchall(self) -> list[Mapping[str, Any]]: ...


class Tx(ABC):
    """One open transaction."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run ``sql`` with ``?`` placeholders."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> Mapping[str, Any] | None:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        return self.execute(sql, params).fetchall()

    @abstractmethod
    def lock(self, name: str) -> None:
        """Serialize with every other transaction that locks ``name`` until this one ends.

        PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do, since
        every write transaction already holds the database's single write lock.
        """

    @abstractmethod
    def notify(self, channel: str) -> None:
        """Wake listeners of ``channel`` once this transaction commits."""


@dataclass(frozen=True)
class Listener:
    """Stops a notification listener."""

    stop: Callable[[], None]


class Database(ABC):
    dialect: Dialect
    #: Appended to a SELECT that is followed by an UPDATE of the rows it read.
    for_update: str = ""
    #: Same, skipping rows another transaction has locked (job claiming).
    skip_locked: str = ""

    def skip_locked_of(self, alias: str) -> str:
        """``skip_locked`` for the rows of table ``alias`` only (a join with a grouped query)."""
        return f" FOR UPDATE OF {alias} SKIP LOCKED" if self.skip_locked else ""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction: committed on success, rolled back on an exception."""

    def read(self) -> AbstractContextManager[Tx]:
        """Reads; backends may serve them without the write lock or a transaction."""
        return self.transaction()

    def autocommit(self) -> AbstractContextManager[Tx]:
        """Each statement commits on its own: for one statement that is atomic by itself."""
        return self.read()

    @abstractmethod
    def ping(self) -> tuple[bool, str]:
        """Whether the database answers (for /readyz), and why not."""

    def listen(self, channel: str, callback: Callable[[], None]) -> Listener | None:
        """Call ``callback`` on each notification of ``channel``; None: not supported."""
        del channel, callback
        return None

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, without credentials (for logs)."""
