"""Durable state of ``sluice serve``: one seam (``Database``), two backends.

``open_database`` picks the backend from the configuration: PostgreSQL when
``SLUICE_DATABASE_URL`` is set (any number of replicas), else the SQLite file
under ``SLUICE_DATA_DIR`` (one node), and applies the schema migrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.server.storage.base import Conflict, Database, StorageError
from bot.server.storage.migrations import migrate
from bot.server.storage.sqlite import SqliteDatabase

if TYPE_CHECKING:
    from bot.config.server import ServerConfig

__all__ = ["Conflict", "Database", "StorageError", "open_database", "open_for"]


def open_for(
    config: ServerConfig,
    *,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    max_connections: int = 10,
) -> Database:
    """The database ``sluice serve`` is configured for (``SLUICE_DATABASE_URL`` or SQLite)."""
    return open_database(
        config.storage.database_url,
        config.db_path,
        synchronous=synchronous,
        max_connections=max_connections,
    )


def open_database(
    database_url: str | None,
    sqlite_path: Path,
    *,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    max_connections: int = 10,
) -> Database:
    """The configured database, migrated to the current schema."""
    db: Database
    if database_url:
        from bot.server.storage.postgres import PostgresDatabase  # psycopg only when used

        db = PostgresDatabase(
            database_url, max_connections=max_connections, synchronous=synchronous
        )
    else:
        db = SqliteDatabase(sqlite_path, synchronous=synchronous)
    migrate(db)
    return db
