"""Deploy state the bot keeps in its own database: rollback pins and the deploy log.

A pin holds an app at the revision a ``/rollback`` chose until the revert pull
request merges: later merges that touch the app are held, so nothing re-deploys
the change that was rolled back. The deploy log maps each ledger commit the bot
wrote back to the repository, pull request and commit it came from, so a puller
event (which names an app and a ledger commit) finds the PR to report on.
Both tables live in the bot's database (SQLite or PostgreSQL) next to the job queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.deploy.sql import SqlDatabase


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
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db


class PinStore(_Store):
    """Rollback pins, one per (repo, app); a newer rollback replaces the older pin."""

    def pin(self, pin: Pin) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO deploy_pins"
                " (repo_key, app, rollback_pr, revert_pr, revision, actor, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repo_key, app) DO UPDATE SET"
                " rollback_pr = excluded.rollback_pr, revert_pr = excluded.revert_pr,"
                " revision = excluded.revision, actor = excluded.actor, at = excluded.at",
                (pin.repo_key, pin.app, pin.rollback_pr, pin.revert_pr, pin.revision,
                 pin.actor, pin.at),
            )  # fmt: skip

    def get(self, repo_key: str, app: str) -> Pin | None:
        with self._db.read() as tx:
            row = tx.one(
                f"SELECT {_PIN_COLUMNS} FROM deploy_pins WHERE repo_key = ? AND app = ?",
                (repo_key, app),
            )
        return Pin(**row) if row else None

    def pins(self, repo_key: str) -> list[Pin]:
        with self._db.read() as tx:
            rows = tx.all(
                f"SELECT {_PIN_COLUMNS} FROM deploy_pins WHERE repo_key = ? ORDER BY app",
                (repo_key,),
            )
        return [Pin(**row) for row in rows]

    def unpin_revert(self, repo_key: str, revert_pr: int) -> list[str]:
        """Remove the pins that wait for ``revert_pr``; return the apps unpinned."""
        with self._db.transaction() as tx:
            rows = tx.all(
                "DELETE FROM deploy_pins WHERE repo_key = ? AND revert_pr = ? RETURNING app",
                (repo_key, revert_pr),
            )
        return sorted(row["app"] for row in rows)


_PIN_COLUMNS = "repo_key, app, rollback_pr, revert_pr, revision, actor, at"
_LOG_COLUMNS = (
    "ledger_commit, app, forge, repo, clone_url, project_id, pr, status_sha, action, id,"
    " drift_fp, reported"
)


class DeployLog(_Store):
    """Which repository, PR and commit each ledger commit the bot wrote belongs to."""

    def add(self, records: list[DeployRecord]) -> None:
        with self._db.transaction() as tx:
            for r in records:
                tx.execute(
                    "INSERT INTO deploy_log (ledger_commit, app, forge, repo, clone_url,"
                    " project_id, pr, status_sha, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.ledger_commit, r.app, r.forge, r.repo, r.clone_url, r.project_id, r.pr,
                     r.status_sha, r.action),
                )  # fmt: skip

    def get(self, app: str, ledger_commit: str) -> DeployRecord | None:
        """The record of exactly ``ledger_commit`` for ``app``."""
        with self._db.read() as tx:
            row = tx.one(
                f"SELECT {_LOG_COLUMNS} FROM deploy_log WHERE ledger_commit = ? AND app = ?"
                " ORDER BY id DESC LIMIT 1",
                (ledger_commit, app),
            )
        return _record(row) if row else None

    def mark_reported(self, record_id: int) -> None:
        with self._db.transaction() as tx:
            tx.execute("UPDATE deploy_log SET reported = 1 WHERE id = ?", (record_id,))

    def find(self, app: str, ledger_commit: str | None = None) -> DeployRecord | None:
        """The record of ``ledger_commit`` for ``app``, else the latest one for ``app``."""
        with self._db.read() as tx:
            row = None
            if ledger_commit:
                row = tx.one(
                    f"SELECT {_LOG_COLUMNS} FROM deploy_log WHERE ledger_commit = ? AND app = ?"
                    " ORDER BY id DESC LIMIT 1",
                    (ledger_commit, app),
                )
            if row is None:
                row = tx.one(
                    f"SELECT {_LOG_COLUMNS} FROM deploy_log WHERE app = ? ORDER BY id DESC LIMIT 1",
                    (app,),
                )
        return _record(row) if row else None

    def set_drift(self, record_id: int, fingerprint: str | None) -> bool:
        """Remember the drift last reported; False when it is the same as before."""
        with self._db.transaction() as tx:
            row = tx.one(
                "SELECT drift_fp FROM deploy_log WHERE id = ?" + self._db.for_update, (record_id,)
            )
            if row is None or row["drift_fp"] == fingerprint:
                return False
            tx.execute("UPDATE deploy_log SET drift_fp = ? WHERE id = ?", (fingerprint, record_id))
        return True


def _record(row: Mapping[str, Any]) -> DeployRecord:
    return DeployRecord(**{**row, "reported": bool(row["reported"])})
