"""What the puller did, kept in SQLite under its data dir.

Three small tables: the last N results per app (the ``history`` of
``GET /v1/apps/<app>``), a key/value table for the little state a restart must
not lose (the last ledger commit acted on, so a rewound ledger is refused), and
the outbox of events the bot has not acknowledged yet.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

MAX_OUTBOX = 1000
ResultAction = Literal["deploy", "rollback", "preview-deploy", "sync"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    applied INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_app ON results (app, id);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class LastResult:
    """One deploy, rollback, preview-deploy or sync attempt (PULLER_API.md ``LastResult``)."""

    revision: str
    ledger_commit: str
    action: ResultAction
    pr: int | None
    result: Literal["succeeded", "failed"]
    health: str
    created: int
    updated: int
    unchanged: int
    pruned: int
    started_at: str
    finished_at: str
    duration_s: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LastResult:
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


class HistoryStore:
    """The puller's SQLite file. Safe to share between the loop and the API threads."""

    def __init__(self, path: str | Path, *, limit: int = 10) -> None:
        if limit < 1:
            raise ValueError("history limit must be at least 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock, closing(sqlite3.connect(self.path, timeout=10.0)) as db, db:
            yield db

    # -- results

    def record(self, app: str, result: LastResult, *, applied: bool) -> None:
        """Add ``result``; ``applied`` says the cluster now follows its revision."""
        body = json.dumps(result.to_dict(), sort_keys=True)
        with self._connect() as db:
            db.execute(
                "INSERT INTO results (app, applied, body) VALUES (?, ?, ?)",
                (app, int(applied), body),
            )
            db.execute(
                "DELETE FROM results WHERE app = ? AND id NOT IN "
                "(SELECT id FROM results WHERE app = ? ORDER BY id DESC LIMIT ?)",
                (app, app, self.limit),
            )

    def history(self, app: str) -> list[LastResult]:
        """Newest first, at most ``limit``."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT body FROM results WHERE app = ? ORDER BY id DESC LIMIT ?",
                (app, self.limit),
            ).fetchall()
        return [LastResult.from_dict(json.loads(body)) for (body,) in rows]

    def last_applied(self, app: str) -> LastResult | None:
        """The newest result whose revision the cluster was brought to."""
        with self._connect() as db:
            row = db.execute(
                "SELECT body FROM results WHERE app = ? AND applied = 1 ORDER BY id DESC LIMIT 1",
                (app,),
            ).fetchone()
        return LastResult.from_dict(json.loads(row[0])) if row else None

    # -- small durable state

    def get_state(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- event outbox

    def enqueue_event(self, event: dict[str, Any]) -> None:
        """Queue ``event``; when the bot stays away, only the newest events are kept."""
        with self._connect() as db:
            db.execute("INSERT INTO outbox (body) VALUES (?)", (json.dumps(event),))
            db.execute(
                "DELETE FROM outbox WHERE id NOT IN "
                "(SELECT id FROM outbox ORDER BY id DESC LIMIT ?)",
                (MAX_OUTBOX,),
            )

    def pending_events(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        with self._connect() as db:
            rows = db.execute("SELECT id, body FROM outbox ORDER BY id LIMIT ?", (limit,))
            return [(row_id, json.loads(body)) for row_id, body in rows.fetchall()]

    def event_sent(self, event_id: int) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (event_id,))

    def event_failed(self, event_id: int) -> None:
        with self._connect() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (event_id,))
