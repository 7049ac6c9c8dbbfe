"""Upkeep of the job queue: recovering jobs of dead workers, pruning, inspection, the
pools' liveness beats. A part of ``JobQueue`` (bot/server/storage/queue.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bot.server.storage.base import JOBS_CHANNEL, Database, Tx
from bot.server.storage.jobs import (
    DURATION_BUCKETS,
    RESULTS,
    Job,
    PoolBeat,
    QueueStats,
    Recovery,
    job_from_row,
)


class QueueUpkeep:
    """Recovery, pruning and inspection; ``JobQueue`` provides the fields below."""

    database: Database
    replica: str
    clock: Callable[[], float]

    def _count(self, tx: Tx, kind: str, result: str) -> None:
        raise NotImplementedError

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
                    self._count(tx, row["kind"], RESULTS[state])
                    if state == "failed":
                        failed.append(job_from_row(row))
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

    def get(self, job_id: int) -> Job | None:
        with self.database.read() as tx:
            row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row else None

    def jobs(self, pr_key: str | None = None) -> list[Job]:
        with self.database.read() as tx:
            if pr_key is None:
                rows = tx.all("SELECT * FROM jobs ORDER BY id")
            else:
                rows = tx.all("SELECT * FROM jobs WHERE pr_key = ? ORDER BY id", (pr_key,))
        return [job_from_row(r) for r in rows]

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
