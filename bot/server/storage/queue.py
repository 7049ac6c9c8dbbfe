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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.server.storage.base import JOBS_CHANNEL, Conflict, Database, Listener, Tx
from bot.server.storage.jobs import (
    DURATION_BUCKETS,
    RESULTS,
    Job,
    JobState,
    NewJob,
    PoolBeat,
    QueueStats,
    Recovery,
    job_from_row,
)
from bot.server.storage.migrations import migrate
from bot.server.storage.sqlite import SqliteDatabase
from bot.server.storage.upkeep import QueueUpkeep

__all__ = ["DURATION_BUCKETS", "Job", "JobQueue", "NewJob", "PoolBeat", "QueueStats", "Recovery"]

_MAX_ERROR_CHARS = 2000
_CLAIM_TRIES = 4
_RUNNING_FENCE = "id = ? AND attempts = ? AND worker_id = ? AND state = 'running'"


@dataclass
class JobQueue(QueueUpkeep):
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
                    # Read after the PR was seen idle, so a start is never recorded before
                    # the previous job's end (``now`` was read before waiting on the database).
                    started = self.clock()
                    claimed = tx.one(
                        "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                        "worker_id = ?, lease_expires_at = ?, started_at = ? "
                        "WHERE id = ? AND state = 'queued' RETURNING *",
                        (worker_id, started + lease_s, started, row["id"]),
                    )
                if claimed is not None:
                    return job_from_row(claimed)
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
            self._count(tx, job.kind, RESULTS[state])
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

    def listen(self, wake: Callable[[], None]) -> Listener | None:
        """Call ``wake`` whenever a job may have become runnable (PostgreSQL only)."""
        return self.database.listen(JOBS_CHANNEL, wake)

    # -- inspection -------------------------------------------------------------------
    def ping(self) -> tuple[bool, str]:
        """Whether the database answers (for /readyz)."""
        return self.database.ping()

    # -- worker pool liveness (the pool may run in another process or replica) ----------
