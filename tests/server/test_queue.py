"""The durable job queue and the worker pool, on both storage backends (a real SQLite
file and a real PostgreSQL server)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.forge.base import ForgeError
from bot.server.storage.queue import JobQueue, NewJob
from bot.server.worker import CancelToken, JobCancelled, RetryableError, WorkerPool


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def job(pr: int = 1, head: str | None = "a" * 40, kind: str = "preview", **kw) -> NewJob:
    key = f"github:org/repo#{pr}"
    return NewJob(kind, "github", "org/repo", key, {"pr": pr, "head": head}, head_sha=head, **kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(database, clock: Clock) -> JobQueue:
    return JobQueue(database, clock=clock)


def test_sqlite_database_is_wal_under_the_data_dir(tmp_path):
    queue = JobQueue(tmp_path / "data" / "sluice.db")
    assert (tmp_path / "data" / "sluice.db").is_file()
    mode = queue.database.connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert queue.ping() == (True, "database ok")


def test_delivery_is_recorded_once(queue):
    first = queue.enqueue_delivery("d-1", job())
    assert first
    assert queue.enqueue_delivery("d-1", job(pr=2)) is None
    assert [j.id for j in queue.jobs()] == [first]
    assert queue.seen_delivery("d-1") and not queue.seen_delivery("d-2")
    stored = queue.get(first)
    assert stored.state == "queued" and stored.payload == {"pr": 1, "head": "a" * 40}
    assert stored.pr_key == "github:org/repo#1" and stored.attempts == 0


def test_jobs_of_one_pr_run_one_at_a_time_other_prs_in_parallel(queue):
    a1 = queue.enqueue_delivery("1", job(pr=1, kind="preview"))
    a2 = queue.enqueue_delivery("2", job(pr=1, head=None, kind="command"))
    b1 = queue.enqueue_delivery("3", job(pr=2))
    first = queue.claim("w1", lease_s=30)
    second = queue.claim("w2", lease_s=30)
    assert (first.id, second.id) == (a1, b1)  # a2 waits: PR 1 already has a running job
    assert queue.claim("w3", lease_s=30) is None
    assert queue.complete(first)
    third = queue.claim("w3", lease_s=30)
    assert third.id == a2 and third.state == "running" and third.attempts == 1
    assert queue.get(a1).state == "done"


def test_backoff_delays_the_next_claim(queue, clock):
    queue.enqueue_delivery("1", job())
    claimed = queue.claim("w", lease_s=30)
    assert queue.retry(claimed, "RetryableError: 502 from GitHub", delay_s=10)
    assert queue.get(claimed.id).last_error == "RetryableError: 502 from GitHub"
    assert queue.claim("w", lease_s=30) is None
    clock.now += 10
    again = queue.claim("w", lease_s=30)
    assert again.id == claimed.id and again.attempts == 2


def test_a_worker_that_lost_its_lease_cannot_record_an_outcome(queue, clock):
    queue.enqueue_delivery("1", job())
    stale = queue.claim("w-old", lease_s=5)
    clock.now += 6
    assert queue.recover_expired().requeued == (stale.id,)
    fresh = queue.claim("w-new", lease_s=5)
    assert fresh.attempts == 2
    assert not queue.heartbeat(stale, 5)
    assert not queue.complete(stale)
    assert not queue.fail(stale, "late")
    assert queue.get(stale.id).state == "running"
    assert queue.heartbeat(fresh, 5) and queue.complete(fresh)


def test_heartbeat_keeps_a_long_job_from_being_recovered(queue, clock):
    queue.enqueue_delivery("1", job())
    claimed = queue.claim("w", lease_s=5)
    for _ in range(4):
        clock.now += 4
        assert queue.heartbeat(claimed, 5)
        assert queue.recover_expired().requeued == ()
    assert queue.complete(claimed)


def test_recovery_gives_up_after_max_attempts(queue, clock):
    queue.enqueue_delivery("1", job())
    for _ in range(3):
        queue.claim("w", lease_s=5)
        clock.now += 6
        recovery = queue.recover_expired(max_attempts=3)
    assert recovery.requeued == ()
    assert [j.id for j in recovery.failed] == [1]
    assert queue.get(1).state == "failed"
    assert "lease expired" in queue.get(1).last_error


def test_cancel_superseded(queue):
    old_queued = queue.enqueue_delivery("1", job(pr=1, head="a" * 40))
    old_running_id = queue.enqueue_delivery("2", job(pr=3, head="a" * 40))
    command = queue.enqueue_delivery("3", job(pr=1, head=None, kind="command"))
    same_head = queue.enqueue_delivery("4", job(pr=1, head="b" * 40))
    other_pr = queue.enqueue_delivery("5", job(pr=2, head="a" * 40))
    running = queue.claim("w", lease_s=30)
    assert running.id == old_queued
    # A push to PR 1 at head c: queued previews for other heads are cancelled,
    # the running one is flagged, commands and other PRs are untouched.
    assert queue.cancel_superseded("github:org/repo#1", "c" * 40) == 2
    assert queue.is_cancelled(old_queued) and queue.get(old_queued).state == "running"
    assert queue.get(same_head).state == "cancelled"
    assert queue.get(command).state == "queued"
    assert queue.get(other_pr).state == "queued" and not queue.is_cancelled(other_pr)
    assert queue.get(old_running_id).state == "queued"
    # The flagged job ends cancelled even if its handler completes.
    assert queue.complete(running)
    assert queue.get(old_queued).state == "cancelled"


def test_enqueue_supersedes_atomically_in_arrival_order(queue):
    older = queue.enqueue_delivery("1", job(pr=1, head="a" * 40, supersedes=True))
    newer = queue.enqueue_delivery("2", job(pr=1, head="b" * 40, supersedes=True))
    assert queue.get(older).state == "cancelled"
    assert queue.get(newer).state == "queued"
    # A force-push back to head a is the PR's newest state: it supersedes head b.
    back = queue.enqueue_delivery("3", job(pr=1, head="a" * 40, supersedes=True))
    assert queue.get(newer).state == "cancelled" and queue.get(back).state == "queued"
    assert queue.stats().totals == {("preview", "cancelled"): 2}


def test_stats_count_outcomes_and_durations(queue, clock):
    for delivery in ("1", "2", "3"):
        queue.enqueue_delivery(delivery, job(pr=int(delivery)))
    ok = queue.claim("w", 30)
    clock.now += 0.3
    queue.complete(ok)
    bad = queue.claim("w", 30)
    clock.now += 20
    queue.fail(bad, "boom")
    stats = queue.stats()
    assert stats.by_state == {"queued": 1, "running": 0, "done": 1, "failed": 1, "cancelled": 0}
    assert stats.totals == {("preview", "success"): 1, ("preview", "failure"): 1}
    count, total, buckets = stats.durations["preview"]
    assert count == 2 and total == pytest.approx(20.3)
    assert buckets[2] == 1  # 0.3 s falls in the 0.5 s bucket
    assert buckets[7] == 1  # 20 s falls in the 30 s bucket
    assert stats.oldest_queued_age_s == pytest.approx(20.3)


def test_release_and_fencing_by_worker(queue):
    queue.enqueue_delivery("1", job())
    first = queue.claim("w1", lease_s=30)
    assert queue.release(first)  # shutdown: back in the queue, attempt not counted
    second = queue.claim("w2", lease_s=30)
    assert second.attempts == first.attempts == 1
    # The first worker's late outcome does not touch the second worker's claim.
    assert not queue.complete(first) and not queue.owns(first)
    assert queue.owns(second) and queue.complete(second)


def test_prune_forgets_old_finished_work(queue, clock):
    queue.enqueue_delivery("old", job(pr=1))
    queue.complete(queue.claim("w", 30))
    queue.enqueue_delivery("pending", job(pr=2))
    clock.now += 15 * 24 * 3600
    queue.enqueue_delivery("new", job(pr=3))
    assert queue.prune(keep_s=14 * 24 * 3600) == 1
    assert [j.pr_key[-2:] for j in queue.jobs()] == ["#2", "#3"]
    assert not queue.seen_delivery("old") and queue.seen_delivery("new")


CRASHING_WORKER = """
import os, sys
from bot.server.storage.queue import JobQueue
queue = JobQueue(sys.argv[1])
job = queue.claim("doomed-worker", lease_s=0.5)
print(job.id, flush=True)
os._exit(9)  # the process dies holding the job
"""


def test_a_job_claimed_by_a_crashed_process_is_run_again(tmp_path):
    db = tmp_path / "sluice.db"
    queue = JobQueue(db)
    job_id = queue.enqueue_delivery("d", job())
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_WORKER, str(db)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=30,
    )
    assert crashed.returncode == 9 and crashed.stdout.split() == [str(job_id)]
    assert queue.get(job_id).state == "running"
    assert queue.claim("survivor", lease_s=30) is None  # still leased to the dead worker
    time.sleep(0.6)
    assert queue.recover_expired().requeued == (job_id,)
    rerun = queue.claim("survivor", lease_s=30)
    assert rerun.id == job_id and rerun.attempts == 2 and rerun.worker_id == "survivor"
    assert queue.complete(rerun)


def _claim_loop(db: str, worker: str, log_path: str) -> None:
    queue = JobQueue(Path(db))
    with open(log_path, "a") as log:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.0:
            claimed = queue.claim(worker, lease_s=30)
            if claimed is None:
                time.sleep(0.005)
                continue
            start = time.time()
            time.sleep(0.02)
            end = time.time()
            assert queue.complete(claimed)
            log.write(f"{claimed.id} {claimed.pr_key} {start} {end}\n")
            log.flush()
            idle_since = time.monotonic()


def test_processes_never_claim_the_same_job_and_serialize_per_pr(tmp_path):
    db = tmp_path / "sluice.db"
    queue = JobQueue(db)
    for n in range(60):
        queue.enqueue_delivery(f"d{n}", job(pr=n % 6, head=f"{n:040d}"))
    log_path = tmp_path / "claims.log"
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_claim_loop, args=(str(db), f"p{i}", str(log_path))) for i in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    rows = [line.split() for line in log_path.read_text().splitlines()]
    ids = [int(r[0]) for r in rows]
    assert sorted(ids) == list(range(1, 61))  # every job exactly once
    by_pr: dict[str, list[tuple[float, float]]] = {}
    for _, key, start, end in rows:
        by_pr.setdefault(key, []).append((float(start), float(end)))
    for spans in by_pr.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    every = sorted((float(r[2]), float(r[3])) for r in rows)
    assert any(a[1] > b[0] for a, b in zip(every, every[1:], strict=False)), "no parallelism"
    assert queue.stats().by_state["done"] == 60


# -- worker pool ------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def real_queue(tmp_path: Path) -> JobQueue:
    return JobQueue(tmp_path / "sluice.db")


def make_pool(queue: JobQueue, handler, **kw) -> WorkerPool:
    options = {"size": 2, "poll_s": 0.02, "base_backoff_s": 0.05, "housekeeping_s": 0.1}
    options.update(kw)
    return WorkerPool(queue, handler, **options)


def test_pool_retries_transient_errors_with_backoff_then_gives_up(real_queue):
    attempts: list[float] = []
    given_up: list[tuple[int, str]] = []

    def handler(job, token):
        attempts.append(time.monotonic())
        raise RetryableError("GitHub answered 502")

    pool = make_pool(
        real_queue,
        handler,
        max_attempts=4,
        on_give_up=lambda job, exc: given_up.append((job.id, str(exc))),
    )
    job_id = real_queue.enqueue_delivery("d", job())
    pool.start()
    try:
        wait_until(lambda: real_queue.get(job_id).state == "failed")
    finally:
        pool.stop(5)
    assert len(attempts) == 4
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    # Backoff doubles: about 0.05, 0.1, 0.2 s (with up to 25% jitter below).
    assert gaps[0] >= 0.035 and gaps[2] >= 0.14 and gaps[2] > gaps[0]
    assert given_up == [(job_id, "GitHub answered 502")]
    final = real_queue.get(job_id)
    assert final.attempts == 4 and "RetryableError: GitHub answered 502" in final.last_error
    assert real_queue.stats().totals == {("preview", "retry"): 3, ("preview", "failure"): 1}


def test_pool_retries_transient_forge_errors_and_fails_permanent_ones(real_queue):
    calls: dict[int, int] = {}

    def handler(job, token):
        calls[job.id] = calls.get(job.id, 0) + 1
        if job.payload["pr"] == 1 and calls[job.id] < 3:
            raise ForgeError("rate limited", status=429, transient=True)
        if job.payload["pr"] == 2:
            raise ForgeError("not found", status=404)
        if job.payload["pr"] == 3:
            raise KeyError("handler bug")

    given_up: list[int] = []
    pool = make_pool(real_queue, handler, on_give_up=lambda job, exc: given_up.append(job.id))
    flaky = real_queue.enqueue_delivery("1", job(pr=1))
    missing = real_queue.enqueue_delivery("2", job(pr=2))
    buggy = real_queue.enqueue_delivery("3", job(pr=3))
    pool.start()
    try:
        wait_until(
            lambda: (
                all(real_queue.get(i).state != "queued" for i in (flaky, missing, buggy))
                and real_queue.stats().by_state["running"] == 0
            )
        )
    finally:
        pool.stop(5)
    assert real_queue.get(flaky).state == "done" and calls[flaky] == 3
    assert real_queue.get(missing).state == "failed" and calls[missing] == 1
    assert (
        real_queue.get(buggy).state == "failed" and "KeyError" in real_queue.get(buggy).last_error
    )
    assert sorted(given_up) == [missing, buggy]


def test_pool_runs_prs_in_parallel_but_each_pr_serially(real_queue):
    spans: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def handler(job, token):
        start = time.monotonic()
        time.sleep(0.05)
        with lock:
            spans.append((job.pr_key, start, time.monotonic()))

    for n in range(12):
        real_queue.enqueue_delivery(f"d{n}", job(pr=n % 3, head=f"{n:040d}"))
    pool = make_pool(real_queue, handler, size=4)
    pool.start()
    try:
        wait_until(lambda: real_queue.stats().by_state["done"] == 12)
    finally:
        pool.stop(5)
    for key in {s[0] for s in spans}:
        own = sorted((s[1], s[2]) for s in spans if s[0] == key)
        assert all(a[1] <= b[0] for a, b in zip(own, own[1:], strict=False))
    ordered = sorted((s[1], s[2]) for s in spans)
    assert any(a[1] > b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def test_a_new_push_stops_the_running_preview(real_queue):
    started = threading.Event()
    seen: list[int] = []

    def handler(job, token: CancelToken):
        if job.head_sha == "a" * 40:
            started.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                token.raise_if_cancelled()
                time.sleep(0.01)
        seen.append(job.id)

    pool = make_pool(real_queue, handler)
    old = real_queue.enqueue_delivery("1", job(head="a" * 40, supersedes=True))
    pool.start()
    try:
        assert started.wait(5)
        new = real_queue.enqueue_delivery("2", job(head="b" * 40, supersedes=True))
        wait_until(lambda: real_queue.get(new).state == "done")
    finally:
        pool.stop(5)
    assert real_queue.get(old).state == "cancelled"
    assert seen == [new]


def test_pool_liveness_beat_and_graceful_stop(real_queue):
    release = threading.Event()
    pool = make_pool(real_queue, lambda job, token: release.wait(5))
    assert not pool.alive()
    pool.start()
    assert pool.alive()
    (beat,) = real_queue.pool_beats()
    assert beat.pid == os.getpid() and beat.alive == beat.size == 2
    job_id = real_queue.enqueue_delivery("d", job())
    wait_until(lambda: real_queue.get(job_id).state == "running")
    release.set()
    pool.stop(5)
    assert not pool.alive()
    assert real_queue.get(job_id).state == "done"  # stop waited for the running job
    assert real_queue.pool_beats() == []


def test_stop_gives_back_jobs_that_outlive_the_grace_period(real_queue):
    hang = threading.Event()
    pool = make_pool(real_queue, lambda job, token: hang.wait(10), size=1)
    job_id = real_queue.enqueue_delivery("d", job())
    pool.start()
    wait_until(lambda: real_queue.get(job_id).state == "running")
    pool.stop(0.2)
    requeued = real_queue.get(job_id)
    assert requeued.state == "queued" and requeued.attempts == 0
    hang.set()


def test_handler_can_stop_early_by_raising_job_cancelled(real_queue):
    pool = make_pool(real_queue, lambda job, token: (_ for _ in ()).throw(JobCancelled("x")))
    job_id = real_queue.enqueue_delivery("d", job())
    pool.start()
    try:
        wait_until(lambda: real_queue.get(job_id).state == "cancelled")
    finally:
        pool.stop(5)
