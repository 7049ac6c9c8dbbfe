"""Storage contracts across replicas, on both backends: migrations, claims, deliveries,
deploy locks with fencing, the shared write budget, and wake-ups.

"Replicas" here are separate database handles (their own connections or pools) used
from many threads at once; tests/e2e/test_replicas.py runs real processes.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from bot.deploy.locks import DeployLocks, LockLost, LockStore
from bot.forge.retry import WritePacer
from bot.server.storage.budget import SharedWriteBudget, budget_key
from bot.server.storage.migrations import MIGRATIONS, migrate, schema_version
from bot.server.storage.queue import JobQueue, NewJob


def run_threads(targets):
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)


def test_migrations_started_together_apply_once(database, reopen):
    handles = [reopen(database) for _ in range(4)]
    applied: list[list[int]] = []
    run_threads([lambda h=h: applied.append(migrate(h)) for h in handles])
    assert sorted(map(tuple, applied)) == [()] * 4  # the fixture migrated first
    assert schema_version(database) == MIGRATIONS[-1].version
    with database.read() as tx:
        versions = [r["version"] for r in tx.all("SELECT version FROM schema_migrations")]
    assert sorted(versions) == [m.version for m in MIGRATIONS]


def test_a_delivery_received_by_several_replicas_at_once_makes_one_job(database, reopen):
    queues = [JobQueue(reopen(database)) for _ in range(6)]
    results: list[int | None] = []
    job = NewJob("preview", "github", "o/r", "github:o/r#1", {}, head_sha="a" * 40)
    run_threads([lambda q=q: results.append(q.enqueue_delivery("same", job)) for q in queues])
    assert len([r for r in results if r]) == 1
    assert len(queues[0].jobs()) == 1


def test_replicas_run_each_prs_jobs_one_at_a_time_in_order(database, reopen):
    intake = JobQueue(database)
    for n in range(40):
        intake.enqueue(NewJob("command", "github", "o/r", f"github:o/r#{n % 8}", {"n": n}))
    spans: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    guard = threading.Lock()

    def worker(queue: JobQueue, name: str) -> None:
        idle = 0
        while idle < 5:
            job = queue.claim(name, lease_s=30)
            if job is None:
                idle += 1
                time.sleep(0.02)
                continue
            idle = 0
            start = time.monotonic()
            time.sleep(0.005)
            end = time.monotonic()
            assert queue.complete(job)
            with guard:
                spans[job.pr_key].append((job.id, start, end))

    replicas = [JobQueue(reopen(database), replica=f"r{i}") for i in range(3)]
    run_threads([lambda q=q, i=i, t=t: worker(q, f"r{i}/{t}")
                 for i, q in enumerate(replicas) for t in range(3)])  # fmt: skip
    assert sum(len(s) for s in spans.values()) == 40
    for pr, runs in spans.items():
        by_start = sorted(runs, key=lambda r: r[1])
        assert [r[0] for r in by_start] == sorted(r[0] for r in runs), f"{pr} ran out of order"
        for (_, _, end), (_, start, _) in zip(by_start, by_start[1:], strict=False):
            assert start >= end, f"two jobs of {pr} overlapped"
    assert {j.state for j in intake.jobs()} == {"done"}


def test_new_job_wakes_a_listener_on_another_replica(database, reopen):
    woken = threading.Event()
    listener = JobQueue(reopen(database)).listen(woken.set)
    if database.dialect == "sqlite":
        assert listener is None  # one node: the pool polls (and dev mode wakes in-process)
        return
    try:
        time.sleep(0.3)
        woken.clear()
        JobQueue(database).enqueue(NewJob("command", "github", "o/r", "github:o/r#1", {}))
        assert woken.wait(2.0)
    finally:
        listener.stop()


# -- deploy locks -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_deploy_lock_is_exclusive_and_its_token_fences_a_stale_holder(database, reopen):
    clock = Clock()
    a, b = LockStore(database, clock), LockStore(reopen(database), clock)
    first = a.acquire("github:o/r/web", "replica-a", 10)
    assert first is not None and first.token == 1
    assert b.acquire("github:o/r/web", "replica-b", 10) is None
    assert a.renew(first, 10)
    clock.now += 11  # replica a stalls past its lease
    second = b.acquire("github:o/r/web", "replica-b", 10)
    assert second is not None and second.token == 2
    assert not a.holds(first) and not a.renew(first, 10)
    a.release(first)  # a stale release does not free b's lock
    assert b.holds(second)
    assert a.acquire("github:o/r/web", "replica-a", 10) is None
    b.release(second)
    third = a.acquire("github:o/r/web", "replica-a", 10)
    assert third is not None and third.token == 3


def test_a_deploy_that_lost_its_lock_cannot_pass_the_push_check(database, reopen):
    clock = Clock()
    locks = DeployLocks(LockStore(database, clock), lease_s=30)
    other = LockStore(reopen(database), clock)
    with locks.hold("github:o/r", ["web", "api"]) as leases:
        locks.check("github:o/r", ["web", "api"])
        with pytest.raises(LockLost):
            locks.check("github:o/r", ["db"])  # never held
        clock.now += 25  # less than the push margin left
        with pytest.raises(LockLost, match="web"):
            locks.check("github:o/r", ["web"])
        clock.now += 10  # expired; another replica takes it over
        taken = other.acquire("github:o/r/web", "replica-b", 30)
        assert taken is not None and taken.token == leases[1].token + 1
        with pytest.raises(LockLost):
            locks.check("github:o/r", ["web"])
    with pytest.raises(LockLost):
        locks.check("github:o/r", ["api"])  # released on exit


def test_replicas_never_hold_one_apps_deploy_lock_together(database, reopen):
    inside: list[str] = []
    overlaps: list[str] = []
    guard = threading.Lock()

    def deploy(locks: DeployLocks, name: str) -> None:
        for _ in range(4):
            with locks.hold("github:o/r", ["web"]):
                with guard:
                    if inside:
                        overlaps.append(f"{name} with {inside}")
                    inside.append(name)
                time.sleep(0.01)
                locks.check("github:o/r", ["web"])
                with guard:
                    inside.remove(name)

    replicas = [DeployLocks(LockStore(reopen(database)), poll_s=0.01) for _ in range(3)]
    run_threads([lambda r=r, i=i: deploy(r, f"r{i}") for i, r in enumerate(replicas)])
    assert overlaps == []


# -- the shared write budget --------------------------------------------------------------


def test_write_budget_is_shared_by_every_replica(database, reopen):
    key = budget_key("github", "https://api.github.test", "token-1")
    stamps: list[float] = []
    guard = threading.Lock()

    def writer(pacer: WritePacer) -> None:
        for _ in range(4):
            with pacer.slot():
                time.sleep(0.05)  # the request on its way: it counts until it is done
                with guard:
                    stamps.append(time.monotonic())

    pacers = [
        WritePacer(6, 1.0, shared=SharedWriteBudget(reopen(database)), key=key) for _ in range(3)
    ]
    started = time.monotonic()
    run_threads([lambda p=p: writer(p) for p in pacers])
    stamps.sort()
    assert len(stamps) == 12
    # 12 writes at 6 a second: the 7th waits for the first window to pass.
    assert stamps[6] - started >= 0.95
    for i in range(len(stamps) - 6):
        assert stamps[i + 6] - stamps[i] >= 0.95, "more than 6 writes in one second"


def test_a_servers_wait_hint_pauses_every_replica(database, reopen):
    key = budget_key("github", "https://api.github.test", "token-2")
    told = WritePacer(80, 60, shared=SharedWriteBudget(database), key=key)
    other = WritePacer(80, 60, shared=SharedWriteBudget(reopen(database)), key=key)
    other_token = WritePacer(
        80, 60, shared=SharedWriteBudget(reopen(database)), key=budget_key("github", "x", "t3")
    )
    # A 429 with Retry-After on one replica; the pause is long against a database round
    # trip on a loaded machine, so "not paused" and "paused" cannot be confused.
    told.pause(2.0)
    started = time.monotonic()
    other_token.acquire()
    assert time.monotonic() - started < 1.0  # another token's budget is not paused
    other.acquire()
    assert time.monotonic() - started >= 1.9


def test_budget_key_never_holds_the_token():
    key = budget_key("github", "https://api.github.com", "ghp_secretvalue")
    assert "secret" not in key and key.startswith("github:")


# -- metrics per replica, pacing, upgrades ------------------------------------------------


def test_job_counters_are_per_replica_so_pods_can_be_summed(database, reopen):
    a = JobQueue(database, replica="pod-a")
    b = JobQueue(reopen(database), replica="pod-b")
    for n in range(3):
        a.enqueue(NewJob("command", "github", "o/r", f"github:o/r#{n}", {}))
    for queue in (a, b, a):
        job = queue.claim(f"{queue.replica}/0", 30)
        assert job is not None and queue.complete(job)
    assert a.stats().totals == {("command", "success"): 2}
    assert b.stats().totals == {("command", "success"): 1}
    # The queue itself is one: both pods see the same depth.
    assert a.stats().by_state == b.stats().by_state


def test_a_slow_write_counts_until_it_finished():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = WritePacer(2, 10.0, clock=lambda: now[0], sleep=sleep)
    with pacer.slot():
        now[0] += 4.0  # the request took 4 s to reach the server and answer
    pacer.acquire()
    pacer.acquire()  # the third write waits for the slow one's window: 4 + 10 s
    assert now[0] == pytest.approx(14.0)


def test_an_old_single_node_database_is_upgraded_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "sluice.db"
    with sqlite3.connect(path) as conn:  # the schema of the release before the storage seam
        conn.executescript(
            """
            CREATE TABLE deliveries (delivery_id TEXT PRIMARY KEY, forge TEXT NOT NULL,
                job_id INTEGER, received_at REAL NOT NULL);
            CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                forge TEXT NOT NULL, repo TEXT NOT NULL, pr_key TEXT NOT NULL, head_sha TEXT,
                payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'queued',
                attempts INTEGER NOT NULL DEFAULT 0, next_run_at REAL NOT NULL,
                lease_expires_at REAL, worker_id TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
                last_error TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL);
            CREATE TABLE job_totals (kind TEXT NOT NULL, result TEXT NOT NULL,
                count INTEGER NOT NULL, PRIMARY KEY (kind, result));
            INSERT INTO deliveries VALUES ('old-1', 'github', 1, 1.0);
            INSERT INTO jobs (kind, forge, repo, pr_key, payload, next_run_at, created_at)
                VALUES ('preview', 'github', 'o/r', 'github:o/r#1', '{"pr": 1}', 1.0, 1.0);
            """
        )
    queue = JobQueue(path)
    assert queue.seen_delivery("old-1")
    job = queue.claim("w/0", 30)
    assert job is not None and job.payload == {"pr": 1} and queue.complete(job)
    assert queue.stats().totals == {("preview", "success"): 1}
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "job_totals" not in tables and "deploy_locks" in tables
