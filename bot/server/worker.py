"""A pool of threads that run queued jobs through one handler.

Each thread claims a job, runs ``handler(job, token)`` and records the outcome.
A housekeeping thread extends the leases of running jobs, requeues jobs whose
worker died (lease expired), and writes a liveness beat that ``/readyz`` reads,
possibly from another process.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.config.repo import ConfigError
from bot.errors import RetryableError
from bot.forge.base import ForgeError
from bot.server.storage.base import Listener, StorageError
from bot.server.storage.queue import Job, JobQueue

__all__ = ["CancelToken", "JobCancelled", "JobRunner", "RetryableError", "WorkerPool"]

log = logging.getLogger(__name__)

DEFAULT_JOB_DEADLINE_S = 1800.0

#: How long a worker waits before trying an unreachable database again.
DATABASE_RETRY_S = 1.0


class JobCancelled(Exception):
    """Raised by a handler that saw its ``CancelToken`` fire and stopped early."""


class CancelToken:
    """Tells a running handler that its job was superseded or its lease lost."""

    def __init__(self, queue: JobQueue, job: Job, *, poll_s: float = 0.2):
        self._queue = queue
        self._job = job
        self._poll_s = poll_s
        self._event = threading.Event()
        self._checked_at = 0.0

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        now = time.monotonic()
        if now - self._checked_at >= self._poll_s:
            self._checked_at = now
            if self._queue.is_cancelled(self._job.id) or not self._queue.owns(self._job):
                self._event.set()
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self._job.id} was cancelled")


Handler = Callable[[Job, CancelToken], None]
GiveUp = Callable[[Job, BaseException | str], None]


@dataclass(frozen=True)
class JobRunner:
    """What ``sluice serve`` needs from the application: the handler and the give-up hook."""

    handle: Handler
    on_give_up: GiveUp | None = None


class WorkerPool:
    def __init__(
        self,
        queue: JobQueue,
        handler: Handler,
        size: int = 4,
        *,
        on_give_up: GiveUp | None = None,
        max_attempts: int = 5,
        lease_s: float = 60.0,
        base_backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        poll_s: float = 0.25,
        housekeeping_s: float = 2.0,
        prune_every_s: float = 3600.0,
        keep_finished_s: float = 14 * 24 * 3600,
        orphaned_after_s: float | None = None,
        pool_id: str | None = None,
        job_deadline_s: float | None = None,
    ):
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.queue = queue
        self.handler = handler
        self.size = size
        self.on_give_up = on_give_up
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self.housekeeping_s = housekeeping_s
        self.prune_every_s = prune_every_s
        # A pool beats every housekeeping round; one silent for several rounds is dead.
        self.orphaned_after_s = orphaned_after_s or max(5 * housekeeping_s, 10.0)
        self.keep_finished_s = keep_finished_s
        # Past it a job's lease is no longer extended: it fails, whatever it is doing.
        self.job_deadline_s = job_deadline_s or job_deadline_from_env(os.environ)
        self._deadlines: dict[int, float] = {}
        self.pool_id = pool_id or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        # One wake-up call wakes one idle thread (a NOTIFY per job must not send every
        # idle thread of every replica to the database at once).
        self._wake = threading.Condition()
        self._wakeups = 0
        self._threads: list[threading.Thread] = []
        self._housekeeper: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: dict[int, tuple[Job, CancelToken]] = {}
        self._listener: Listener | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("worker pool already started")
        self._recover()
        # PostgreSQL: NOTIFY wakes idle threads at once; polling stays as the fallback.
        self._listener = self.queue.listen(self.wake)
        for index in range(self.size):
            thread = threading.Thread(
                target=self._work, args=(f"{self.pool_id}/{index}",), name=f"sluice-worker-{index}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        self._housekeeper = threading.Thread(target=self._housekeep, name="sluice-housekeeper")
        self._housekeeper.daemon = True
        self._housekeeper.start()
        self.queue.beat_pool(self.pool_id, self._alive_count(), self.size)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; wait for running jobs; give back any still running at the deadline."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._listener is not None:
            self._listener.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers = [job for job, _ in self._running.values()]
        for job in leftovers:
            # Its thread keeps running until the process exits; fencing discards its outcome.
            try:
                self.queue.release(job)
            except StorageError as exc:  # its lease lapses and another worker takes it
                log.warning("could not give back job %s: %s", job.id, exc)
                continue
            log.warning("job %s (%s) was still running at shutdown; requeued", job.id, job.kind)
        if self._housekeeper is not None:
            self._housekeeper.join(max(0.1, deadline - time.monotonic()))
        try:
            self.queue.clear_pool(self.pool_id)
        except StorageError as exc:  # its beat fades out on its own
            log.warning("could not clear this pool's liveness beat: %s", exc)

    def wake(self) -> None:
        """Have one idle thread poll the queue now (a job may have become runnable)."""
        with self._wake:
            self._wakeups = min(self._wakeups + 1, self.size)
            self._wake.notify()

    def _idle(self) -> None:
        """Wait for a wake-up call, or ``poll_s`` at most (the fallback)."""
        with self._wake:
            if self._wakeups == 0 and not self._stop.is_set():
                self._wake.wait(self.poll_s)
            self._wakeups = max(0, self._wakeups - 1)

    def alive(self) -> bool:
        return (
            bool(self._threads)
            and not self._stop.is_set()
            and self._alive_count() == self.size
            and self._housekeeper is not None
            and self._housekeeper.is_alive()
        )

    def _alive_count(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    # -- the work loop ----------------------------------------------------------------

    def _work(self, worker_id: str) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim(worker_id, self.lease_s)
                if job is None:
                    self._idle()
                    continue
                self._run(job)
            except StorageError as exc:
                # The database is away: keep the thread; an unrecorded outcome's lease
                # lapses and the job runs again (at-least-once).
                log.warning("worker %s: %s; retrying", worker_id, exc)
                self._stop.wait(DATABASE_RETRY_S)

    def _run(self, job: Job) -> None:
        token = CancelToken(self.queue, job)
        with self._lock:
            self._running[job.id] = (job, token)
            self._deadlines[job.id] = time.monotonic() + self.job_deadline_s
        log.info("job %s (%s %s) started, attempt %s", job.id, job.kind, job.pr_key, job.attempts)
        try:
            self.handler(job, token)
        except JobCancelled:
            self.queue.cancelled(job, "stopped early: superseded")
            log.info("job %s cancelled", job.id)
        except RetryableError as exc:
            self._retry_or_give_up(job, exc, exc.delay_s)
        except ForgeError as exc:
            if exc.transient:
                self._retry_or_give_up(job, exc, None)
            else:
                self._give_up(job, exc)
        except Exception as exc:  # a handler bug must not kill the worker thread
            log.exception("job %s (%s) failed", job.id, job.kind)
            self._give_up(job, exc)
        else:
            if token.cancelled:
                self.queue.cancelled(job, "superseded while running")
            else:
                self.queue.complete(job)
            log.info("job %s finished", job.id)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                self._deadlines.pop(job.id, None)

    def _retry_or_give_up(self, job: Job, exc: BaseException, hint_s: float | None) -> None:
        if job.attempts >= self.max_attempts:
            self._give_up(job, exc)
            return
        delay = self.backoff(job.attempts)
        if hint_s is not None:
            delay = max(delay, hint_s)
        if self.queue.retry(job, _describe(exc), delay):
            log.warning(
                "job %s attempt %s failed (%s); retrying in %.1fs",
                job.id,
                job.attempts,
                type(exc).__name__,
                delay,
            )

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: about base·2^(attempt-1), capped."""
        delay = min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1))
        return delay * (0.75 + random.random() / 4)

    def _give_up(self, job: Job, exc: BaseException | str) -> None:
        if not self.queue.fail(job, _describe(exc)):
            return  # lease lost: whoever owns the job now decides
        log.error(
            "job %s (%s %s) failed for good after %s attempts",
            job.id,
            job.kind,
            job.pr_key,
            job.attempts,
        )
        self._notify_give_up(job, exc)

    def _notify_give_up(self, job: Job, exc: BaseException | str) -> None:
        if self.on_give_up is None:
            return
        try:
            self.on_give_up(job, exc)
        except Exception:
            log.exception("on_give_up for job %s raised", job.id)

    # -- housekeeping -----------------------------------------------------------------

    def _housekeep(self) -> None:
        pruned_at = 0.0
        while not self._stop.wait(min(self.housekeeping_s, self.lease_s / 3)):
            try:
                pruned_at = self._housekeep_once(pruned_at)
            except StorageError as exc:
                log.warning("housekeeping: %s; retrying", exc)

    def _housekeep_once(self, pruned_at: float) -> float:
        if time.monotonic() - pruned_at >= self.prune_every_s:
            pruned_at = time.monotonic()
            self.queue.prune(self.keep_finished_s)
        with self._lock:
            running = list(self._running.values())
            deadlines = dict(self._deadlines)
        now = time.monotonic()
        for job, token in running:
            if now >= deadlines.get(job.id, math.inf):
                self._past_deadline(job, token)
            elif not self.queue.heartbeat(job, self.lease_s):
                token.cancel()
        self._recover()
        self.queue.beat_pool(self.pool_id, self._alive_count(), self.size)
        return pruned_at

    def _past_deadline(self, job: Job, token: CancelToken) -> None:
        """Stop a job at its deadline: cancel it, and fail it instead of extending its lease."""
        token.cancel()
        with self._lock:
            self._deadlines[job.id] = math.inf  # once
        message = (
            f"job deadline exceeded: still running after {self.job_deadline_s:g}s "
            "(SLUICE_JOB_DEADLINE_S)"
        )
        if self.queue.fail(job, message):
            log.error("job %s (%s %s): %s", job.id, job.kind, job.pr_key, message)
            self._notify_give_up(job, message)

    def _recover(self) -> None:
        recovery = self.queue.recover_expired(self.max_attempts, self.orphaned_after_s)
        if recovery.requeued:
            log.warning("requeued %d job(s) whose worker was lost", len(recovery.requeued))
            for _ in recovery.requeued:
                self.wake()
        for job in recovery.failed:
            self._notify_give_up(job, job.last_error or "worker lost repeatedly")


def job_deadline_from_env(environ: Mapping[str, str]) -> float:
    """``SLUICE_JOB_DEADLINE_S``: how long one job may run in all (default 30 minutes)."""
    raw = environ.get("SLUICE_JOB_DEADLINE_S", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_JOB_DEADLINE_S
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"SLUICE_JOB_DEADLINE_S: must be a positive number of seconds, got {raw!r}"
        )
    return value


def _describe(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    return f"{type(exc).__name__}: {exc}"
