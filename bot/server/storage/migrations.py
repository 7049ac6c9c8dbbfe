"""Versioned schema migrations, applied at start under a lock.

Two replicas starting together both call ``migrate``: the first takes the lock
(PostgreSQL: an advisory lock; SQLite: the write lock) and applies what is
missing, the second then finds every version recorded and applies nothing.
A migration is never edited once released; a change is a new version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot.server.storage.base import Database, Dialect, Tx

log = logging.getLogger(__name__)

MIGRATION_LOCK = "sluice:migrations"

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "big": "INTEGER"},
    "postgres": {"id": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "big": "BIGINT"},
}

_V1_QUEUE = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    forge TEXT NOT NULL,
    job_id {big},
    received_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id {id},
    kind TEXT NOT NULL,
    forge TEXT NOT NULL,
    repo TEXT NOT NULL,
    pr_key TEXT NOT NULL,
    head_sha TEXT,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_run_at {real} NOT NULL,
    lease_expires_at {real},
    worker_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at {real} NOT NULL,
    started_at {real},
    finished_at {real}
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (state, next_run_at, id);
CREATE INDEX IF NOT EXISTS jobs_pr ON jobs (pr_key, state);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_running_per_pr ON jobs (pr_key) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS job_outcomes (
    replica TEXT NOT NULL,
    kind TEXT NOT NULL,
    result TEXT NOT NULL,
    count {big} NOT NULL,
    PRIMARY KEY (replica, kind, result)
);
CREATE TABLE IF NOT EXISTS job_duration_buckets (
    replica TEXT NOT NULL,
    kind TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    count {big} NOT NULL,
    total {real} NOT NULL,
    PRIMARY KEY (replica, kind, bucket)
);
CREATE TABLE IF NOT EXISTS pool_beats (
    pool_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    alive INTEGER NOT NULL,
    size INTEGER NOT NULL,
    at {real} NOT NULL
);
"""

_V1_DEPLOY = """
CREATE TABLE IF NOT EXISTS policy_overrides (
    id {id},
    pr_key TEXT NOT NULL,
    head_sha TEXT NOT NULL,
    violations_fp TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_overrides_lookup
    ON policy_overrides (pr_key, head_sha, violations_fp);
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
    id {id},
    ledger_commit TEXT NOT NULL,
    app TEXT NOT NULL,
    forge TEXT NOT NULL,
    repo TEXT NOT NULL,
    clone_url TEXT NOT NULL,
    project_id {big},
    pr INTEGER,
    status_sha TEXT NOT NULL,
    action TEXT NOT NULL,
    drift_fp TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deploy_log_commit ON deploy_log (ledger_commit, app);
CREATE INDEX IF NOT EXISTS deploy_log_app ON deploy_log (app, id);
CREATE TABLE IF NOT EXISTS deploy_locks (
    lock_key TEXT PRIMARY KEY,
    holder TEXT,
    token {big} NOT NULL,
    expires_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS write_slots (
    budget_key TEXT NOT NULL,
    at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS write_slots_key ON write_slots (budget_key, at);
CREATE TABLE IF NOT EXISTS write_pauses (
    budget_key TEXT PRIMARY KEY,
    until_at {real} NOT NULL
);
"""

_APPEND_ONLY: dict[Dialect, str] = {
    "sqlite": """
CREATE TRIGGER IF NOT EXISTS policy_overrides_no_update
    BEFORE UPDATE ON policy_overrides
    BEGIN SELECT RAISE(ABORT, 'policy_overrides is an append-only audit log'); END;
CREATE TRIGGER IF NOT EXISTS policy_overrides_no_delete
    BEFORE DELETE ON policy_overrides
    BEGIN SELECT RAISE(ABORT, 'policy_overrides is an append-only audit log'); END;
-- counters of releases before 0.2 (one process, no replica label)
DROP TABLE IF EXISTS job_totals;
DROP TABLE IF EXISTS job_durations;
""",
    "postgres": """
CREATE OR REPLACE FUNCTION sluice_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'policy_overrides is an append-only audit log';
END $$;
CREATE TRIGGER policy_overrides_append_only
    BEFORE UPDATE OR DELETE ON policy_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION sluice_append_only();
""",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    #: The SQL for each dialect: statements separated by ";\n" at the end of a line.
    sql: dict[Dialect, str]


def _both(template: str) -> dict[Dialect, str]:
    return {d: template.format(**types) for d, types in _TYPES.items()}


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "job queue, counters, pool beats", _both(_V1_QUEUE)),
    Migration(2, "overrides, pins, deploy log, deploy locks, write budget", _both(_V1_DEPLOY)),
    Migration(3, "append-only override audit log", dict(_APPEND_ONLY)),
    Migration(
        4,
        "write slots count from when the write finished",
        _both(
            "ALTER TABLE write_slots ADD COLUMN slot TEXT;\n"
            "CREATE INDEX IF NOT EXISTS write_slots_slot ON write_slots (budget_key, slot);\n"
        ),
    ),
    Migration(
        5,
        "the head of each PR's line of queued jobs is an index lookup",
        _both("CREATE INDEX IF NOT EXISTS jobs_queued_per_pr ON jobs (state, pr_key, id);\n"),
    ),
    Migration(
        6,
        "full report pages, served by every replica",
        _both(
            "CREATE TABLE IF NOT EXISTS report_pages (token TEXT PRIMARY KEY, html TEXT NOT NULL, "
            "json TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL);\n"
            "CREATE INDEX IF NOT EXISTS report_pages_expiry ON report_pages (expires_at);\n"
        ),
    ),
)


def migrate(db: Database) -> list[int]:
    """Apply the missing migrations in order; returns the versions applied now."""
    applied: list[int] = []
    with db.transaction() as tx:
        tx.lock(MIGRATION_LOCK)
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {row["version"] for row in tx.all("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            _apply(tx, migration.sql[db.dialect])
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (
                    migration.version,
                    migration.name,
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                ),
            )
            applied.append(migration.version)
    if applied:
        log.info("%s: applied schema migrations %s", db.describe(), applied)
    return applied


def schema_version(db: Database) -> int:
    with db.read() as tx:
        row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
    return int(row["v"] or 0) if row else 0


def _apply(tx: Tx, script: str) -> None:
    for statement in _statements(script):
        tx.execute(statement)


def _statements(script: str) -> list[str]:
    """Split on ``;`` at a line end, keeping a PL/pgSQL body (``$$ … $$``) whole."""
    out: list[str] = []
    current: list[str] = []
    in_body = False
    for line in script.splitlines():
        if line.strip().startswith("--") and not current:
            continue
        current.append(line)
        if line.count("$$") % 2:
            in_body = not in_body
        if not in_body and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";")
            if statement:
                out.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        out.append(tail)
    return out
