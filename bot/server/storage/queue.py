"""The durable job queue, on either backend of the storage seam.

Guarantees (on SQLite for one node, on PostgreSQL for any number of replicas):

* a delivery id is recorded once; recording it and enqueuing its job is one
  transaction, so a duplicate delivery never creates a second job, even when two
  replicas receive it at the same moment;
* a PR never has two running jobs (a partial unique index says so), and its jobs
  start in arrival order: only the oldest queued job of a PR can be claimed;
* a new push supersedes older work in the same transaction that enqueues it;
* a claimed job carries a lease; a job whose worker died goes back to the queue
  when the lease expires or its pool stops beating (at-least-once). Every state
  change after the claim is fenced by (id, attempts, worker id): a worker that
  lost its lease cannot overwrite the outcome of the one that took over.

Outcome counters and duration histograms are kept per replica in the database, so
the HTTP process exports what its own replica's worker process did.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.server.storage.base import JOBS_CHANNEL, Conflict, Database, Listener, Tx
from bot.server.storage.migrations import migrate
from bot.server.storage.sqlite import SqliteDatabase

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JobResult = Literal["success", "failure", "retry", "cancelled"]

#: Upper bounds (seconds) of the job duration histogram.
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_MAX_ERROR_CHARS = 2000
_CLAIM_TRIES = 4
_RUNNING_FENCE = "id = ? AND attempts = ? AND worker_id = ? AND state = 'running'"


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
    finished_at: float | None = None


@dataclass(frozen=True)
class QueueStats:
    by_state: dict[str, int]
    oldest_queued_age_s: float
    totals: dict[tuple[str, str], int]  # (kind, result) -> count, this replica's
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
    """``db`` is a ``Database``, or the path of a SQLite file (the single-node default)."""

    db: Database | Path | str
    #: Which replica's outcome counters this queue writes and reads.
    replica: str = "local"
    busy_timeout_ms: int = 10_000
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    clock: Callable[[], float] = field(default=time.time, repr=False)
    database: Database = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.db, Database):
            self.database = self.db
        else:
            self.database = SqliteDatabase(
                self.db, busy_timeout_ms=self.busy_timeout_ms, synchronous=self.synchronous
            )
        migrate(self.database)

    @property
    def path(self) -> Path | None:
        return getattr(self.database, "path", None)

    def close(self) -> None:
        self.database.close()

    # -- intake -----------------------------------------------------------------------

    def enqueue_delivery(self, delivery_id: str, job: NewJob) -> int | None:
        """Record the delivery and its job atomically.

        Returns the new job id (truthy), or None if the delivery was seen before.
        """
        now = self.clock()
        if self.database.dialect == "postgres" and not (job.supersedes and job.head_sha):
            return self._enqueue_delivery_at_once(delivery_id, job, now)
        try:
            with self.database.transaction() as tx:
                first = tx.one(
                    "INSERT INTO deliveries (delivery_id, forge, received_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
                    (delivery_id, job.forge, now),
                )
                if first is None:
                    return None
                job_id = self._insert(tx, job, now)
                tx.execute(
                    "UPDATE deliveries SET job_id = ? WHERE delivery_id = ?", (job_id, delivery_id)
                )
        except Conflict:
            return None  # another replica recorded it between our check and insert
        return job_id

    def _enqueue_delivery_at_once(self, delivery_id: str, job: NewJob, now: float) -> int | None:
        """PostgreSQL: the delivery, its job and the wake-up in one statement (atomic on its
        own, one round trip). A delivery seen before inserts neither row."""
        with self.database.autocommit() as tx:
            row = tx.one(
                "WITH next AS (SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id), "
                "d AS (INSERT INTO deliveries (delivery_id, forge, job_id, received_at) "
                "      SELECT ?, ?, next.id, ? FROM next "
                "      ON CONFLICT (delivery_id) DO NOTHING RETURNING job_id), "
                "j AS (INSERT INTO jobs (id, kind, forge, repo, pr_key, head_sha, payload, "
                "      next_run_at, created_at) "
                "      SELECT d.job_id, ?, ?, ?, ?, ?, ?, ?, ? FROM d RETURNING id) "
                "SELECT j.id, pg_notify(?, '') FROM j",
                (delivery_id, job.forge, now, job.kind, job.forge, job.repo, job.pr_key,
                 job.head_sha, json.dumps(job.payload, separators=(",", ":")), now, now,
                 JOBS_CHANNEL),
            )  # fmt: skip
        return int(row["id"]) if row else None

    def enqueue(self, job: NewJob) -> int:
        """Enqueue work that has no delivery (e.g. a follow-up the bot schedules itself)."""
        with self.database.transaction() as tx:
            return self._insert(tx, job, self.clock())

    def seen_delivery(self, delivery_id: str) -> bool:
        with self.database.read() as tx:
            return (
                tx.one("SELECT 1 FROM deliveries WHERE delivery_id = ?", (delivery_id,)) is not None
            )

    def _insert(self, tx: Tx, job: NewJob, now: float) -> int:
        row = tx.one(
            "INSERT INTO jobs (kind, forge, repo, pr_key, head_sha, payload, next_run_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (job.kind, job.forge, job.repo, job.pr_key, job.head_sha,
             json.dumps(job.payload, separators=(",", ":")), now, now),
        )  # fmt: skip
        assert row is not None
        if job.supersedes and job.head_sha:
            self._cancel_superseded(tx, job.pr_key, job.head_sha, (job.kind,))
        tx.notify(JOBS_CHANNEL)
        return int(row["id"])

    # -- workers ----------------------------------------------------------------------

    def claim(self, worker_id: str, lease_s: float) -> Job | None:
        """Take the oldest runnable job whose PR has no running job, or None.

        Only the oldest queued job of each PR is a candidate, so a PR's jobs start
        in arrival order even when several replicas claim at once.
        """
        for _ in range(_CLAIM_TRIES):
            now = self.clock()
            try:
                with self.database.transaction() as tx:
                    # The head of each PR's line, once per PR: a PR with many queued jobs
                    # behind a running one costs one row here, not one row per job.
                    row = tx.one(
                        "SELECT j.id FROM (SELECT MIN(id) AS id FROM jobs WHERE state = 'queued' "
                        "                  GROUP BY pr_key) AS head "
                        "JOIN jobs AS j ON j.id = head.id "
                        "WHERE j.next_run_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs AS r "
                        "      WHERE r.pr_key = j.pr_key AND r.state = 'running') "
                        "ORDER BY j.id LIMIT 1" + self.database.skip_locked_of("j"),
                        (now,),
                    )
                    if row is None:
                        return None
                    claimed = tx.one(
                        "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                        "worker_id = ?, lease_expires_at = ?, started_at = ? "
                        "WHERE id = ? AND state = 'queued' RETURNING *",
                        (worker_id, now + lease_s, now, row["id"]),
                    )
                if claimed is not None:
                    return _job(claimed)
            except Conflict:
                continue  # another replica started a job of this PR first
        return None

    def heartbeat(self, job: Job, lease_s: float) -> bool:
        """Extend the lease; False if the job is no longer this worker's (stop working)."""
        with self.database.transaction() as tx:
            cursor = tx.execute(
                f"UPDATE jobs SET lease_expires_at = ? WHERE {_RUNNING_FENCE}",
                (self.clock() + lease_s, job.id, job.attempts, job.worker_id),
            )
            return cursor.rowcount == 1

    def is_cancelled(self, job_id: int) -> bool:
        with self.database.read() as tx:
            row = tx.one("SELECT state, cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return row is None or row["state"] == "cancelled" or bool(row["cancel_requested"])

    def owns(self, job: Job) -> bool:
        """Whether ``job`` is still running under this claim (its lease was not taken over)."""
        with self.database.read() as tx:
            row = tx.one(
                f"SELECT 1 FROM jobs WHERE {_RUNNING_FENCE}",
                (job.id, job.attempts, job.worker_id),
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
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, worker_id = NULL, "
                f"lease_expires_at = NULL, next_run_at = ? WHERE {_RUNNING_FENCE}",
                (self.clock(), job.id, job.attempts, job.worker_id),
            )
            if cursor.rowcount == 1:
                tx.notify(JOBS_CHANNEL)
            return cursor.rowcount == 1

    def _finish(self, job: Job, state: JobState, error: str | None, delay_s: float | None) -> bool:
        now = self.clock()
        error = error[:_MAX_ERROR_CHARS] if error else None
        with self.database.transaction() as tx:
            row = tx.one(
                f"SELECT cancel_requested, started_at FROM jobs WHERE {_RUNNING_FENCE}"
                + self.database.for_update,
                (job.id, job.attempts, job.worker_id),
            )
            if row is None:
                return False  # lease lost: someone else owns the outcome now
            if row["cancel_requested"] and state in ("done", "queued"):
                state = "cancelled"
            if state == "queued":
                tx.execute(
                    "UPDATE jobs SET state = 'queued', worker_id = NULL, lease_expires_at = NULL, "
                    "next_run_at = ?, last_error = ? WHERE id = ?",
                    (now + (delay_s or 0.0), error, job.id),
                )
            else:
                tx.execute(
                    "UPDATE jobs SET state = ?, lease_expires_at = NULL, finished_at = ?, "
                    "last_error = COALESCE(?, last_error) WHERE id = ?",
                    (state, now, error, job.id),
                )
            self._count(tx, job.kind, _RESULTS[state])
            self._observe(tx, job.kind, max(0.0, now - (row["started_at"] or now)))
            tx.notify(JOBS_CHANNEL)  # the PR's next job may run now
        return True

    def _count(self, tx: Tx, kind: str, result: str) -> None:
        tx.execute(
            "INSERT INTO job_outcomes (replica, kind, result, count) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (replica, kind, result) "
            "DO UPDATE SET count = job_outcomes.count + 1",
            (self.replica, kind, result),
        )

    def _observe(self, tx: Tx, kind: str, seconds: float) -> None:
        bucket = next(
            (i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound),
            len(DURATION_BUCKETS),
        )
        tx.execute(
            "INSERT INTO job_duration_buckets (replica, kind, bucket, count, total) "
            "VALUES (?, ?, ?, 1, ?) ON CONFLICT (replica, kind, bucket) DO UPDATE SET "
            "count = job_duration_buckets.count + 1, "
            "total = job_duration_buckets.total + excluded.total",
            (self.replica, kind, bucket, seconds),
        )

    # -- supersession and recovery ----------------------------------------------------

    def cancel_superseded(
        self, pr_key: str, head_sha: str, kinds: tuple[str, ...] = ("preview",)
    ) -> int:
        """Cancel this PR's queued jobs for other heads; flag running ones.

        Returns how many jobs were cancelled or flagged.
        """
        with self.database.transaction() as tx:
            return self._cancel_superseded(tx, pr_key, head_sha, kinds)

    def _cancel_superseded(self, tx: Tx, pr_key: str, head_sha: str, kinds: tuple[str, ...]) -> int:
        # Arrival order decides: a force-push back to an older head is the newest state.
        marks = ",".join("?" * len(kinds))
        params: list[Any] = [pr_key, head_sha, *kinds]
        cancelled = tx.all(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, "
            "last_error = 'superseded by a newer push' "
            f"WHERE pr_key = ? AND head_sha IS NOT NULL AND head_sha != ? AND kind IN ({marks}) "
            "AND state = 'queued' RETURNING kind",
            [self.clock(), *params],
        )
        for row in cancelled:
            self._count(tx, row["kind"], "cancelled")
        running = tx.execute(
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
        sql = "SELECT * FROM jobs AS j WHERE j.state = 'running' AND (j.lease_expires_at < ?"
        params: list[Any] = [now]
        if orphaned_after_s is not None:
            sql += (
                " OR NOT EXISTS (SELECT 1 FROM pool_beats AS b WHERE b.at >= ? "
                "AND substr(j.worker_id, 1, length(b.pool_id) + 1) = b.pool_id || '/')"
            )
            params.append(now - orphaned_after_s)
        sql += ")" + self.database.skip_locked
        requeued: list[int] = []
        failed: list[Job] = []
        with self.database.transaction() as tx:
            for row in tx.all(sql, params):
                give_up = row["cancel_requested"] or (
                    max_attempts is not None and row["attempts"] >= max_attempts
                )
                if give_up:
                    state = "cancelled" if row["cancel_requested"] else "failed"
                    error = f"worker lost (lease expired) on attempt {row['attempts']}"
                    tx.execute(
                        "UPDATE jobs SET state = ?, finished_at = ?, lease_expires_at = NULL, "
                        "last_error = ? WHERE id = ?",
                        (state, now, error, row["id"]),
                    )
                    self._count(tx, row["kind"], _RESULTS[state])
                    if state == "failed":
                        failed.append(_job(row))
                else:
                    tx.execute(
                        "UPDATE jobs SET state = 'queued', worker_id = NULL, "
                        "lease_expires_at = NULL, next_run_at = ?, "
                        "last_error = 'worker lost (lease expired)' WHERE id = ?",
                        (now, row["id"]),
                    )
                    requeued.append(row["id"])
            if requeued:
                tx.notify(JOBS_CHANNEL)
        return Recovery(tuple(requeued), tuple(failed))

    def prune(self, keep_s: float = 14 * 24 * 3600) -> int:
        """Forget finished jobs and deliveries older than ``keep_s``; returns jobs removed.

        A delivery redelivered after that is processed again (at-least-once anyway).
        """
        cutoff = self.clock() - keep_s
        with self.database.transaction() as tx:
            removed = tx.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') "
                "AND created_at < ?",
                (cutoff,),
            ).rowcount
            tx.execute("DELETE FROM deliveries WHERE received_at < ?", (cutoff,))
        return removed

    def listen(self, wake: Callable[[], None]) -> Listener | None:
        """Call ``wake`` whenever a job may have become runnable (PostgreSQL only)."""
        return self.database.listen(JOBS_CHANNEL, wake)

    # -- inspection -------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with self.database.read() as tx:
            row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    def jobs(self, pr_key: str | None = None) -> list[Job]:
        with self.database.read() as tx:
            if pr_key is None:
                rows = tx.all("SELECT * FROM jobs ORDER BY id")
            else:
                rows = tx.all("SELECT * FROM jobs WHERE pr_key = ? ORDER BY id", (pr_key,))
        return [_job(r) for r in rows]

    def stats(self) -> QueueStats:
        """Queue depth and ages for the whole fleet; outcome counters for this replica."""
        by_state = {s: 0 for s in ("queued", "running", "done", "failed", "cancelled")}
        with self.database.read() as tx:
            for row in tx.all("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
                by_state[row["state"]] = int(row["n"])
            oldest = tx.one("SELECT MIN(created_at) AS t FROM jobs WHERE state = 'queued'")
            totals = {
                (r["kind"], r["result"]): int(r["count"])
                for r in tx.all(
                    "SELECT kind, result, count FROM job_outcomes WHERE replica = ?",
                    (self.replica,),
                )
            }
            durations: dict[str, tuple[int, float, tuple[int, ...]]] = {}
            buckets: dict[str, list[int]] = {}
            for r in tx.all(
                "SELECT kind, bucket, count, total FROM job_duration_buckets WHERE replica = ?",
                (self.replica,),
            ):
                counts = buckets.setdefault(r["kind"], [0] * (len(DURATION_BUCKETS) + 1))
                counts[int(r["bucket"])] += int(r["count"])
                count, total, _ = durations.get(r["kind"], (0, 0.0, ()))
                durations[r["kind"]] = (count + int(r["count"]), total + float(r["total"]), ())
        t = oldest["t"] if oldest else None
        return QueueStats(
            by_state=by_state,
            oldest_queued_age_s=max(0.0, self.clock() - t) if t else 0.0,
            totals=totals,
            durations={k: (c, s, tuple(buckets[k])) for k, (c, s, _) in durations.items()},
        )

    def ping(self) -> tuple[bool, str]:
        """Whether the database answers (for /readyz)."""
        return self.database.ping()

    # -- worker pool liveness (the pool may run in another process or replica) ----------

    def beat_pool(self, pool_id: str, alive: int, size: int) -> None:
        with self.database.transaction() as tx:
            # Beats of pools that died without saying goodbye (SIGKILL) fade out.
            tx.execute("DELETE FROM pool_beats WHERE at < ?", (self.clock() - 3600,))
            tx.execute(
                "INSERT INTO pool_beats (pool_id, pid, alive, size, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (pool_id) DO UPDATE SET pid = excluded.pid, alive = excluded.alive, "
                "size = excluded.size, at = excluded.at",
                (pool_id, os.getpid(), alive, size, self.clock()),
            )

    def clear_pool(self, pool_id: str) -> None:
        with self.database.transaction() as tx:
            tx.execute("DELETE FROM pool_beats WHERE pool_id = ?", (pool_id,))

    def pool_beats(self, prefix: str = "") -> list[PoolBeat]:
        """Liveness beats, optionally only of pools whose id starts with ``prefix``."""
        with self.database.read() as tx:
            rows = tx.all("SELECT * FROM pool_beats ORDER BY pool_id")
        return [
            PoolBeat(r["pool_id"], r["pid"], r["alive"], r["size"], r["at"])
            for r in rows
            if r["pool_id"].startswith(prefix)
        ]


_RESULTS: dict[str, str] = {
    "done": "success",
    "failed": "failure",
    "queued": "retry",
    "cancelled": "cancelled",
}


def _job(row: Any) -> Job:
    return Job(
        id=int(row["id"]),
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
        finished_at=row["finished_at"],
    )
