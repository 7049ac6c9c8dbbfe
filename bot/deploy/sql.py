"""What the deploy stores need from the bot's database (``bot.server.storage`` provides it).

The deploy side never opens a database itself: ``sluice serve`` hands it the one
``Database`` of the storage seam (SQLite or PostgreSQL), whose migrations own
the schema. SQL here is portable, with ``?`` placeholders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class SqlCursor(Protocol):
    rowcount: int

    def fetchone(self) -> Mapping[str, Any] | None: ...

    def fetchall(self) -> list[Mapping[str, Any]]: ...


class SqlTx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> SqlCursor: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Mapping[str, Any] | None: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]: ...

    def lock(self, name: str) -> None: ...


class SqlDatabase(Protocol):
    #: Appended to a SELECT whose rows the same transaction then updates.
    for_update: str

    def transaction(self) -> AbstractContextManager[SqlTx]: ...

    def read(self) -> AbstractContextManager[SqlTx]: ...
