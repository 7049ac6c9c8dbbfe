"""Deploy state the bot keeps in its own database: rollback pins and the deploy log.

A pin holds an app at the revision a ``/rollback`` chose until the revert pull
request merges: later merges that touch the app are held, so nothing re-deploys
the change that was rolled back. The deploy log maps each ledger commit the bot
wrote back to the repository, pull request and commit it came from, so a puller
event (which names an app and a ledger commit) finds the PR to report on.
Both tables live in the bot's SQLite file next to the job queue (WAL mode).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploy_pins (
    repo_key TEXT NOT NULL,
    app TEXT NOT NULL,
    rollback_pr INTEGER NOT NULL,
    revert_pr INTEGER,
    revision TEXT NOT NULL,
    actor TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (repo_key, app)
);
CREATE TABLE IF NOT EXISTS deploy_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ledger_commit TEXT NOT NULL,
    app TEXT NOT NULL,
    forge TEXT NOT NULL,
    repo TEXT NOT NULL,
    clone_url TEXT NOT NULL,
    project_id INTEGER,
    pr INTEGER,
    status_sha TEXT NOT NULL,
    action TEXT NOT NULL,
    drift_fp TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deploy_log_commit ON deploy_log (ledger_commit, app);
CREATE INDEX IF NOT EXISTS deploy_log_app ON deploy_log (app, id);
"""


@dataclass(frozen=True)
class Pin:
    repo_key: str  # "github:acme/deploy"
    app: str
    rollback_pr: int
    revert_pr: int | None
    revision: str
    actor: str
    at: str

    def reason(self) -> str:
        until = f"#{self.revert_pr} merges" if self.revert_pr else "its revert merges"
        return f"held: pinned by rollback of #{self.rollback_pr} until {until}"


@dataclass(frozen=True)
class DeployRecord:
    """One app's entry in one ledger commit the bot wrote."""

    ledger_commit: str
    app: str
    forge: str
    repo: str  # full name
    clone_url: str
    project_id: int | None
    pr: int | None
    status_sha: str  # where ``sluice/deploy/<app>`` goes (the merge or head commit)
    action: str
    id: int = 0
    drift_fp: str | None = None
    #: Whether the PR already got the puller's result for this entry.
    reported: bool = False


def repo_key(forge: str, full_name: str) -> str:
    return f"{forge}:{full_name}"


class _Store:
    def __init__(self, db_path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self._path = Path(db_path)
        self._busy_timeout = busy_timeout
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._path, timeout=self._busy_timeout)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            with conn:
                yield conn


class PinStore(_Store):
    """Rollback pins, one per (repo, app); a newer rollback replaces the older pin."""

    def pin(self, pin: Pin) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO deploy_pins"
                " (repo_key, app, rollback_pr, revert_pr, revision, actor, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (pin.repo_key, pin.app, pin.rollback_pr, pin.revert_pr, pin.revision,
                 pin.actor, pin.at),
            )  # fmt: skip

    def get(self, repo_key: str, app: str) -> Pin | None:
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_PIN_COLUMNS} FROM deploy_pins WHERE repo_key = ? AND app = ?",
                (repo_key, app),
            ).fetchone()
        return Pin(*row) if row else None

    def pins(self, repo_key: str) -> list[Pin]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_PIN_COLUMNS} FROM deploy_pins WHERE repo_key = ? ORDER BY app",
                (repo_key,),
            ).fetchall()
        return [Pin(*row) for row in rows]

    def unpin_revert(self, repo_key: str, revert_pr: int) -> list[str]:
        """Remove the pins that wait for ``revert_pr``; return the apps unpinned."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT app FROM deploy_pins WHERE repo_key = ? AND revert_pr = ? ORDER BY app",
                (repo_key, revert_pr),
            ).fetchall()
            conn.execute(
                "DELETE FROM deploy_pins WHERE repo_key = ? AND revert_pr = ?",
                (repo_key, revert_pr),
            )
        return [row[0] for row in rows]


_PIN_COLUMNS = "repo_key, app, rollback_pr, revert_pr, revision, actor, at"
_LOG_COLUMNS = (
    "ledger_commit, app, forge, repo, clone_url, project_id, pr, status_sha, action, id,"
    " drift_fp, reported"
)


class DeployLog(_Store):
    """Which repository, PR and commit each ledger commit the bot wrote belongs to."""

    def add(self, records: list[DeployRecord]) -> None:
        with self._connect() as conn:
            conn.executemany(
                "INSERT INTO deploy_log (ledger_commit, app, forge, repo, clone_url, project_id,"
                " pr, status_sha, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.ledger_commit, r.app, r.forge, r.repo, r.clone_url, r.project_id, r.pr,
                     r.status_sha, r.action)
                    for r in records
                ],
            )  # fmt: skip

    def get(self, app: str, ledger_commit: str) -> DeployRecord | None:
        """The record of exactly ``ledger_commit`` for ``app``."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_LOG_COLUMNS} FROM deploy_log WHERE ledger_commit = ? AND app = ?"
                " ORDER BY id DESC LIMIT 1",
                (ledger_commit, app),
            ).fetchone()
        return _record(row) if row else None

    def mark_reported(self, record_id: int) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE deploy_log SET reported = 1 WHERE id = ?", (record_id,))

    def find(self, app: str, ledger_commit: str | None = None) -> DeployRecord | None:
        """The record of ``ledger_commit`` for ``app``, else the latest one for ``app``."""
        with self._connect() as conn:
            row = None
            if ledger_commit:
                row = conn.execute(
                    f"SELECT {_LOG_COLUMNS} FROM deploy_log WHERE ledger_commit = ? AND app = ?"
                    " ORDER BY id DESC LIMIT 1",
                    (ledger_commit, app),
                ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT {_LOG_COLUMNS} FROM deploy_log WHERE app = ? ORDER BY id DESC LIMIT 1",
                    (app,),
                ).fetchone()
        return _record(row) if row else None

    def set_drift(self, record_id: int, fingerprint: str | None) -> bool:
        """Remember the drift last reported; False when it is the same as before."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT drift_fp FROM deploy_log WHERE id = ?", (record_id,)
            ).fetchone()
            if row is None or row[0] == fingerprint:
                return False
            conn.execute(
                "UPDATE deploy_log SET drift_fp = ? WHERE id = ?", (fingerprint, record_id)
            )
        return True


def _record(row: tuple[Any, ...]) -> DeployRecord:
    *head, reported = row
    return DeployRecord(*head, reported=bool(reported))
