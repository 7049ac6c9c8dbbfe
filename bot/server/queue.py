"""Durable job queue in SQLite (WAL mode) under the data directory.

Guarantees:

* a delivery id is recorded once; recording it and enqueuing its job is one
  transaction, so a duplicate delivery never creates a second job;
* ``claim`` runs in one ``BEGIN IMMEDIATE`` transaction: two threads or
  processes never claim the same job; a PR never has two running jobs;
* a claimed job carries a lease; a job whose worker died goes back to the queue
  when the lease expires (at-least-once). Every state change after the claim is
  fenced by (id, attempts, worker id), so a worker that lost its lease cannot overwrite the
  outcome of the one that took over.

Outcome counters and duration histograms are kept in the database too, so the
HTTP process can export what the worker process did.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JobResult = Literal["success", "failure", "retry", "cancelled"]

#: Upper bounds (seconds) of the job duration histogram.
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_MAX_ERROR_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    forge TEXT NOT NULL,
    job_id INTEGER,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    forge TEXT NOT NULL,
    repo TEXT NOT NULL,
    pr_key TEXT NOT NULL,
    head_sha TEXT,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_run_at REAL NOT NULL,
    lease_expires_at REAL,
    worker_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (state, next_run_at, id);
CREATE INDEX IF NOT EXISTS jobs_pr ON jobs (pr_key, state);
CREATE TABLE IF NOT EXISTS job_totals (
    kind TEXT NOT NULL,
    result TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (kind, result)
);
CREATE TABLE IF NOT EXISTS job_durations (
    kind TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    total REAL NOT NULL,
    buckets TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pool_beats (
    pool_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    alive INTEGER NOT NULL,
    size INTEGER NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class NewJob:
    kind: str  # preview | command | merged | closed | ...
    forge: str
    repo: str  # full name
    pr_key: str  # "github:org/repo#12"
    payload: dict[str, Any]
    head_sha: str | None = None
    #: Cancel this PR's queued/running jobs of the same kind for other heads.
    supersedes: bool = False


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    forge: str
    repo: str
    pr_key: str
    head_sha: str | None
    payload: dict[str, Any]
    state: JobState
    attempts: int
    next_run_at: float
    lease_expires_at: float | None
    worker_id: str | None
    last_error: str | None
    created_at: float
    started_at: float | None = None


@dataclass(frozen=True)
class QueueStats:
    by_state: dict[str, int]
    oldest_queued_age_s: float
    totals: dict[tuple[str, str], int]  # (kind, result) -> count
    durations: dict[str, tuple[int, float, tuple[int, ...]]]  # kind -> (count, sum, buckets)


@dataclass(frozen=True)
class Recovery:
    requeued: tuple[int, ...] = ()
    failed: tuple[Job, ...] = ()


@dataclass(frozen=True)
class PoolBeat:
    pool_id: str
    pid: int
    alive: int
    size: int
    at: float


@dataclass
class JobQueue:
    path: Path
    busy_timeout_ms: int = 10_000
    #: FULL: an acknowledged delivery survives a power cut. The job process may use
    #: NORMAL: a job state change lost to a power cut only means the job runs again.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    clock: Callable[[], float] = field(default=time.time, repr=False)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)
    # Threads of one process wait for each other here, not in SQLite's busy handler,
    # which sleeps in growing steps (up to 100 ms) and made intake p99 latency spike.
    _write_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)

    # -- connections ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection; a fresh one after fork (connections don't survive it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        # An acknowledged delivery must survive a power cut, not only a crash.
        conn.execute(f"PRAGMA synchronous={'NORMAL' if self.synchronous == 'NORMAL' else 'FULL'}")
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        with self._write_lock:
            self._begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    # -- intake -----------------------------------------------------------------------

    def enqueue_delivery(self, delivery_id: str, job: NewJob) -> int | None:
        """Record the delivery and its job atomically.

        Returns the new job id (truthy), or None if the delivery was seen before.
        """
        now = self.clock()
        with self._tx() as conn:
            seen = conn.execute(
                "SELECT 1 FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
            if seen:
                return None
            job_id = self._insert(conn, job, now)
            conn.execute(
                "INSERT INTO deliveries (delivery_id, forge, job_id, received_at) "
                "VALUES (?, ?, ?, ?)",
                (delivery_id, job.forge, job_id, now),
            )
            if job.supersedes and job.head_sha:
                self._cancel_superseded(conn, job.pr_key, job.head_sha, (job.kind,))
        return job_id

    def enqueue(self, job: NewJob) -> int:
        """Enqueue work that has no delivery (e.g. a follow-up the bot schedules itself)."""
        with self._tx() as conn:
            job_id = self._insert(conn, job, self.clock())
            if job.supersedes and job.head_sha:
                self._cancel_superseded(conn, job.pr_key, job.head_sha, (job.kind,))
        return job_id

    def seen_delivery(self, delivery_id: str) -> bool:
        row = (
            self._connect()
            .execute("SELECT 1 FROM deliveries WHERE delivery_id = ?", (delivery_id,))
            .fetchone()
        )
        return row is not None

    @staticmethod
    def _insert(conn: sqlite3.Connection, job: NewJob, now: float) -> int:
        cursor = conn.execute(
            "INSERT INTO jobs (kind, forge, repo, pr_key, head_sha, payload, next_run_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.kind,
                job.forge,
                job.repo,
                job.pr_key,
                job.head_sha,
                json.dumps(job.payload, separators=(",", ":")),
                now,
                now,
            ),
        )
        return int(cursor.lastrowid or 0)

    # -- workers ----------------------------------------------------------------------

    def claim(self, worker_id: str, lease_s: float) -> Job | None:
        """Take the oldest runnable job whose PR has no running job, or None."""
        now = self.clock()
        # An idle pool polls often: look before taking the database's write lock.
        runnable = (
            self._connect()
            .execute(
                "SELECT 1 FROM jobs WHERE state = 'queued' AND next_run_at <= ? LIMIT 1", (now,)
            )
            .fetchone()
        )
        if runnable is None:
            return None
        with self._tx() as conn:
            row = conn.execute(
                "SELECT * FROM jobs AS j WHERE j.state = 'queued' AND j.next_run_at <= ? "
                "AND NOT EXISTS (SELECT 1 FROM jobs AS r "
                "                WHERE r.pr_key = j.pr_key AND r.state = 'running') "
                "ORDER BY j.id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker_id = ?, "
                "lease_expires_at = ?, started_at = ? WHERE id = ?",
                (worker_id, now + lease_s, now, row["id"]),
            )
            claimed = conn.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return _job(claimed)

    def heartbeat(self, job: Job, lease_s: float) -> bool:
        """Extend the lease; False if the job is no longer this worker's (stop working)."""
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? "
                "WHERE id = ? AND attempts = ? AND worker_id IS ? AND state = 'running'",
                (self.clock() + lease_s, job.id, job.attempts, job.worker_id),
            )
        return cursor.rowcount == 1

    def is_cancelled(self, job_id: int) -> bool:
        row = (
            self._connect()
            .execute("SELECT state, cancel_requested FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return row is None or row["state"] == "cancelled" or bool(row["cancel_requested"])

    def owns(self, job: Job) -> bool:
        """Whether ``job`` is still running under this claim (its lease was not taken over)."""
        row = (
            self._connect()
            .execute(
                "SELECT 1 FROM jobs WHERE id = ? AND attempts = ? AND worker_id IS ? "
                "AND state = 'running'",
                (job.id, job.attempts, job.worker_id),
            )
            .fetchone()
        )
        return row is not None

    def complete(self, job: Job) -> bool:
        """Mark done (or cancelled, if a newer push asked for it meanwhile)."""
        return self._finish(job, "done", None, None)

    def retry(self, job: Job, error: str, delay_s: float) -> bool:
        """Put the job back, runnable after ``delay_s``."""
        return self._finish(job, "queued", error, delay_s)

    def fail(self, job: Job, error: str) -> bool:
        return self._finish(job, "failed", error, None)

    def cancelled(self, job: Job, reason: str = "cancelled") -> bool:
        """Record that the handler stopped early because the job was cancelled."""
        return self._finish(job, "cancelled", reason, None)

    def release(self, job: Job) -> bool:
        """Give a job back without a verdict (shutdown): runnable now, attempt not counted."""
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, worker_id = NULL, "
                "lease_expires_at = NULL, next_run_at = ? "
                "WHERE id = ? AND attempts = ? AND worker_id IS ? AND state = 'running'",
                (self.clock(), job.id, job.attempts, job.worker_id),
            )
        return cursor.rowcount == 1

    def _finish(self, job: Job, state: JobState, error: str | None, delay_s: float | None) -> bool:
        now = self.clock()
        error = error[:_MAX_ERROR_CHARS] if error else None
        with self._tx() as conn:
            row = conn.execute(
                "SELECT cancel_requested, started_at FROM jobs "
                "WHERE id = ? AND attempts = ? AND worker_id IS ? AND state = 'running'",
                (job.id, job.attempts, job.worker_id),
            ).fetchone()
            if row is None:
                return False  # lease lost: someone else owns the outcome now
            if row["cancel_requested"] and state in ("done", "queued"):
                state = "cancelled"
            if state == "queued":
                conn.execute(
                    "UPDATE jobs SET state = 'queued', worker_id = NULL, lease_expires_at = NULL, "
                    "next_run_at = ?, last_error = ? WHERE id = ?",
                    (now + (delay_s or 0.0), error, job.id),
                )
            else:
                conn.execute(
                    "UPDATE jobs SET state = ?, lease_expires_at = NULL, finished_at = ?, "
                    "last_error = COALESCE(?, last_error) WHERE id = ?",
                    (state, now, error, job.id),
                )
            result = _RESULTS[state]
            self._count(conn, job.kind, result)
            self._observe(conn, job.kind, max(0.0, now - (row["started_at"] or now)))
        return True

    @staticmethod
    def _count(conn: sqlite3.Connection, kind: str, result: str) -> None:
        conn.execute(
            "INSERT INTO job_totals (kind, result, count) VALUES (?, ?, 1) "
            "ON CONFLICT (kind, result) DO UPDATE SET count = count + 1",
            (kind, result),
        )

    @staticmethod
    def _observe(conn: sqlite3.Connection, kind: str, seconds: float) -> None:
        row = conn.execute("SELECT buckets FROM job_durations WHERE kind = ?", (kind,)).fetchone()
        buckets = json.loads(row["buckets"]) if row else [0] * (len(DURATION_BUCKETS) + 1)
        index = next(
            (i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound),
            len(DURATION_BUCKETS),
        )
        buckets[index] += 1
        conn.execute(
            "INSERT INTO job_durations (kind, count, total, buckets) VALUES (?, 1, ?, ?) "
            "ON CONFLICT (kind) DO UPDATE SET count = count + 1, total = total + excluded.total, "
            "buckets = excluded.buckets",
            (kind, seconds, json.dumps(buckets)),
        )

    # -- supersession and recovery ----------------------------------------------------

    def cancel_superseded(
        self, pr_key: str, head_sha: str, kinds: tuple[str, ...] = ("preview",)
    ) -> int:
        """Cancel this PR's queued jobs for other heads; flag running ones.

        Returns how many jobs were cancelled or flagged.
        """
        with self._tx() as conn:
            return self._cancel_superseded(conn, pr_key, head_sha, kinds)

    def _cancel_superseded(
        self, conn: sqlite3.Connection, pr_key: str, head_sha: str, kinds: tuple[str, ...]
    ) -> int:
        # Arrival order decides: a force-push back to an older head is the newest state.
        marks = ",".join("?" * len(kinds))
        params: list[Any] = [pr_key, head_sha, *kinds]
        now = self.clock()
        cancelled = conn.execute(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, "
            "last_error = 'superseded by a newer push' "
            f"WHERE pr_key = ? AND head_sha IS NOT NULL AND head_sha != ? AND kind IN ({marks}) "
            "AND state = 'queued' RETURNING kind",
            [now, *params],
        ).fetchall()
        for row in cancelled:
            self._count(conn, row["kind"], "cancelled")
        running = conn.execute(
            "UPDATE jobs SET cancel_requested = 1 "
            f"WHERE pr_key = ? AND head_sha IS NOT NULL AND head_sha != ? AND kind IN ({marks}) "
            "AND state = 'running' AND cancel_requested = 0",
            params,
        ).rowcount
        return len(cancelled) + running

    def recover_expired(
        self, max_attempts: int | None = None, orphaned_after_s: float | None = None
    ) -> Recovery:
        """Requeue running jobs whose lease expired (their worker died).

        With ``orphaned_after_s``, a job is also recovered when its worker id names a
        pool (``<pool_id>/<n>``) that has not beaten for that long: a killed server
        then resumes its work seconds after a restart instead of a whole lease later.
        A job that already used ``max_attempts`` is failed instead: a job that
        kills its worker every time must not loop forever.
        """
        now = self.clock()
        cutoff = None if orphaned_after_s is None else now - orphaned_after_s
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs AS j WHERE j.state = 'running' AND (j.lease_expires_at < ? "
                "OR (? IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pool_beats AS b "
                "    WHERE b.at >= ? AND substr(j.worker_id, 1, length(b.pool_id) + 1) "
                "                        = b.pool_id || '/')))",
                (now, cutoff, cutoff),
            ).fetchall()
            requeued: list[int] = []
            failed: list[Job] = []
            for row in rows:
                give_up = row["cancel_requested"] or (
                    max_attempts is not None and row["attempts"] >= max_attempts
                )
                if give_up:
                    state = "cancelled" if row["cancel_requested"] else "failed"
                    error = f"worker lost (lease expired) on attempt {row['attempts']}"
                    conn.execute(
                        "UPDATE jobs SET state = ?, finished_at = ?, lease_expires_at = NULL, "
                        "last_error = ? WHERE id = ?",
                        (state, now, error, row["id"]),
                    )
                    self._count(conn, row["kind"], _RESULTS[state])
                    if state == "failed":
                        failed.append(_job(row))
                else:
                    conn.execute(
                        "UPDATE jobs SET state = 'queued', worker_id = NULL, "
                        "lease_expires_at = NULL, next_run_at = ?, "
                        "last_error = 'worker lost (lease expired)' WHERE id = ?",
                        (now, row["id"]),
                    )
                    requeued.append(row["id"])
        return Recovery(tuple(requeued), tuple(failed))

    def prune(self, keep_s: float = 14 * 24 * 3600) -> int:
        """Forget finished jobs and deliveries older than ``keep_s``; returns jobs removed.

        A delivery redelivered after that is processed again (at-least-once anyway).
        """
        cutoff = self.clock() - keep_s
        with self._tx() as conn:
            removed = conn.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') "
                "AND created_at < ?",
                (cutoff,),
            ).rowcount
            conn.execute("DELETE FROM deliveries WHERE received_at < ?", (cutoff,))
        return removed

    # -- inspection -------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, pr_key: str | None = None) -> list[Job]:
        conn = self._connect()
        if pr_key is None:
            rows = conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        else:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE pr_key = ? ORDER BY id", (pr_key,)
            ).fetchall()
        return [_job(r) for r in rows]

    def stats(self) -> QueueStats:
        conn = self._connect()
        by_state = {s: 0 for s in ("queued", "running", "done", "failed", "cancelled")}
        for row in conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            by_state[row["state"]] = row["n"]
        oldest = conn.execute(
            "SELECT MIN(created_at) AS t FROM jobs WHERE state = 'queued'"
        ).fetchone()["t"]
        totals = {
            (r["kind"], r["result"]): r["count"]
            for r in conn.execute("SELECT kind, result, count FROM job_totals")
        }
        durations = {
            r["kind"]: (r["count"], r["total"], tuple(json.loads(r["buckets"])))
            for r in conn.execute("SELECT kind, count, total, buckets FROM job_durations")
        }
        return QueueStats(
            by_state=by_state,
            oldest_queued_age_s=max(0.0, self.clock() - oldest) if oldest else 0.0,
            totals=totals,
            durations=durations,
        )

    def ping(self) -> tuple[bool, str]:
        """Whether the database answers (for /readyz)."""
        try:
            self._connect().execute("SELECT COUNT(*) FROM deliveries WHERE 0").fetchone()
        except sqlite3.Error as exc:
            return False, f"database unavailable: {exc}"
        return True, "database ok"

    # -- worker pool liveness (the pool may run in another process) -----------------------

    def beat_pool(self, pool_id: str, alive: int, size: int) -> None:
        with self._tx() as conn:
            # Beats of pools that died without saying goodbye (SIGKILL) fade out.
            conn.execute("DELETE FROM pool_beats WHERE at < ?", (self.clock() - 3600,))
            conn.execute(
                "INSERT INTO pool_beats (pool_id, pid, alive, size, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (pool_id) DO UPDATE SET pid = excluded.pid, alive = excluded.alive, "
                "size = excluded.size, at = excluded.at",
                (pool_id, os.getpid(), alive, size, self.clock()),
            )

    def clear_pool(self, pool_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM pool_beats WHERE pool_id = ?", (pool_id,))

    def pool_beats(self) -> list[PoolBeat]:
        rows = self._connect().execute("SELECT * FROM pool_beats ORDER BY pool_id").fetchall()
        return [PoolBeat(r["pool_id"], r["pid"], r["alive"], r["size"], r["at"]) for r in rows]


_RESULTS: dict[str, str] = {
    "done": "success",
    "failed": "failure",
    "queued": "retry",
    "cancelled": "cancelled",
}


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        forge=row["forge"],
        repo=row["repo"],
        pr_key=row["pr_key"],
        head_sha=row["head_sha"],
        payload=json.loads(row["payload"]),
        state=row["state"],
        attempts=row["attempts"],
        next_run_at=row["next_run_at"],
        lease_expires_at=row["lease_expires_at"],
        worker_id=row["worker_id"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
    )
