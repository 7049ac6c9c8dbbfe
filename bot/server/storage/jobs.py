"""The job queue's values: what intake enqueues, what a worker claims, what /metrics reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JobResult = Literal["success", "failure", "retry", "cancelled"]

#: Upper bounds (seconds) of the job duration histogram.
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


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


RESULTS: dict[str, str] = {
    "done": "success",
    "failed": "failure",
    "queued": "retry",
    "cancelled": "cancelled",
}


def job_from_row(row: Any) -> Job:
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
