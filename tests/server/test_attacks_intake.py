"""Hostile clients and jobs against ``sluice serve``: each attack tried for real.

A real ``sluice serve`` process (the intake front, gunicorn and the job pool), real
sockets held open by slow or idle clients, and correctly signed deliveries that carry
oversized numbers or deep nesting.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bot.server.storage.queue import JobQueue, NewJob
from bot.server.worker import WorkerPool, job_deadline_from_env


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# -- a job that never ends --------------------------------------------------------------------


def test_a_job_past_its_deadline_fails_and_its_lease_is_not_extended(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "sluice.db")
    release = threading.Event()
    given_up: list[str] = []

    def stubborn(job, token) -> None:
        release.wait(30)  # ignores its cancel token, like a render stuck in C code

    pool = WorkerPool(
        queue,
        stubborn,
        size=1,
        lease_s=1.5,
        housekeeping_s=0.1,
        poll_s=0.02,
        job_deadline_s=0.5,
        on_give_up=lambda job, exc: given_up.append(str(exc)),
    )
    key = "github:org/repo#1"
    job_id = queue.enqueue(NewJob("preview", "github", "org/repo", key, {}, head_sha="a" * 40))
    pool.start()
    try:
        started = time.monotonic()
        wait_until(lambda: queue.get(job_id).state == "failed")
        assert time.monotonic() - started < 3
        failed = queue.get(job_id)
        assert failed.lease_expires_at is None
        assert failed.last_error == (
            "job deadline exceeded: still running after 0.5s (SLUICE_JOB_DEADLINE_S)"
        )
        assert given_up == [failed.last_error]
        # The handler is still blocked; housekeeping never extends its lease again.
        time.sleep(0.5)
        assert queue.get(job_id).lease_expires_at is None
        assert queue.get(job_id).state == "failed"
    finally:
        release.set()
        pool.stop(5)


def test_job_deadline_comes_from_the_environment() -> None:
    assert job_deadline_from_env({}) == 1800.0
    assert job_deadline_from_env({"SLUICE_JOB_DEADLINE_S": "90"}) == 90.0
    with pytest.raises(ValueError, match="SLUICE_JOB_DEADLINE_S: must be a positive number"):
        job_deadline_from_env({"SLUICE_JOB_DEADLINE_S": "-1"})
