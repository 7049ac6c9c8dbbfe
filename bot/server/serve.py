"""``sluice serve``: the webhook intake and the job worker pool.

Production (``dev=False``) is four processes::

    sluice serve (supervisor) ─┬─ sluice-front: buffering asyncio proxy on the bind address
                               ├─ sluice-http: gunicorn master → 1 gthread worker (Flask intake),
                               │               on a Unix socket only the front reaches
                               └─ sluice-jobs: the WorkerPool (exactly one, restarted if it dies)

The front (``bot.server.front``) reads every request whole, under header and body
deadlines, before gunicorn sees it: slow or idle clients cannot hold its threads.

The pool lives in its own process so renders never compete with intake for the
GIL, and so that gunicorn recycling its HTTP worker never starts a second pool.
The supervisor restarts a dead pool process (its claimed jobs come back when
their leases expire); if gunicorn exits, the supervisor stops and exits too.
All shared state is in the database (SQLite, or PostgreSQL for several
replicas), including job metrics and the pool's liveness beat, which /metrics and
/readyz read from the HTTP process.

``role`` splits a replica: ``intake`` runs only the HTTP process (webhooks),
``worker`` runs the pool plus an HTTP process that answers health and metrics but
refuses webhooks, ``all`` (the default) runs both.

``dev=True`` runs Flask's own server with the pool as threads in one process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from multiprocessing.connection import wait
from types import FrameType
from typing import Any, Literal

from flask import Flask, Response, jsonify, request
from gunicorn.app.base import BaseApplication

from bot.config.server import ServerConfig
from bot.server import front
from bot.server.metrics import Metrics
from bot.server.storage import open_for
from bot.server.storage.queue import JobQueue
from bot.server.web import MAX_BODY_BYTES, Readiness, create_app
from bot.server.worker import JobRunner, WorkerPool, job_deadline_from_env

log = logging.getLogger(__name__)

RunnerFactory = Callable[[ServerConfig], JobRunner]
Role = Literal["intake", "worker", "all"]
ROLES: tuple[Role, ...] = ("intake", "worker", "all")

HTTP_THREADS = 8
POOL_BEAT_STALE_S = 10.0
POOL_STOP_TIMEOUT_S = 25.0
_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def default_runner(config: ServerConfig) -> JobRunner:
    """The application's job handlers (``bot.server.handlers.job_runner``)."""
    from bot.server import handlers  # imported late: the HTTP process never needs it

    return handlers.job_runner(config)


def run(
    config: ServerConfig,
    bind: str = "0.0.0.0:8080",
    dev: bool = False,
    *,
    runner_factory: RunnerFactory = default_runner,
    http_threads: int = HTTP_THREADS,
    role: Role = "all",
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    _setup_logging()
    database = open_for(config)  # migrate once, before any child races for it
    log.info("state in %s; replica %s, role %s", database.describe(), replica_of(config), role)
    database.close()
    install_fingerprint_key(config)
    for forge, reason in sorted(config.disabled.items()):
        log.warning("%s webhooks disabled: %s", forge, reason)
    if dev:
        return _run_dev(config, bind, runner_factory)
    return Supervisor(config, bind, runner_factory, http_threads, role).run()


def check_limits(environ: Mapping[str, str]) -> None:
    """Refuse a bad render or job limit at start, not at the first job (ConfigError)."""
    from bot.render.limits import PreviewBudget, RenderLimits
    from bot.render.slots import RenderSlots

    RenderLimits.from_env(environ)
    PreviewBudget.from_env(environ)
    RenderSlots.from_env(environ)
    job_deadline_from_env(environ)


def replica_of(config: ServerConfig) -> str:
    return config.storage.replica_id


def install_fingerprint_key(config: ServerConfig) -> None:
    """Put the configured Secret fingerprint key where previews read it.

    With several replicas every one must fingerprint a Secret value alike, so the
    key comes from configuration and replaces whatever this pod's disk held.
    """
    key = config.storage.fingerprint_key
    if key is None:
        return
    path = config.data_dir / "cache" / "fingerprint.key"
    try:
        if path.read_bytes() == key:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    os.replace(tmp, path)


# -- readiness --------------------------------------------------------------------------


def pool_readiness(
    queue: JobQueue, stale_after_s: float = POOL_BEAT_STALE_S, *, pool_prefix: str = ""
) -> Readiness:
    """Ready when the database answers and this replica's worker pool (ids starting with
    ``pool_prefix``) beat recently with all threads up."""

    def check() -> tuple[bool, str]:
        ok, reason = queue.ping()
        if not ok:
            return ok, reason
        now = time.time()
        fresh = [b for b in queue.pool_beats(pool_prefix) if now - b.at <= stale_after_s]
        if not fresh:
            return False, "no job worker pool is running"
        if not any(b.alive == b.size for b in fresh):
            return False, "job worker threads have died"
        return True, "database ok; job workers alive"

    return check


def pool_prefix(config: ServerConfig) -> str:
    """Pool ids of this replica start with it (``<replica>:<pid>:<random>``)."""
    return f"{replica_of(config)}:"


def build_http_app(config: ServerConfig, role: Role = "all") -> Flask:
    """The intake app as the HTTP process serves it."""
    database = open_for(config, synchronous=config.db_synchronous, max_connections=HTTP_THREADS + 2)
    queue = JobQueue(database, replica=replica_of(config))
    if role == "intake":
        readiness: Readiness = queue.ping  # no pool here: the database is all intake needs
    else:
        readiness = pool_readiness(queue, pool_prefix=pool_prefix(config))
    app = create_app(config, queue, Metrics(queue), readiness)
    if role == "worker":
        _refuse_intake(app)
    return app


def _refuse_intake(app: Flask) -> None:
    """A worker-only replica answers health and metrics, and sends webhooks elsewhere."""

    @app.before_request
    def refuse() -> tuple[Response, int] | None:
        if request.method == "POST":
            message = "this replica runs job workers only (--role worker); send webhooks to intake"
            return jsonify(error=message), 503
        return None


# -- production: supervisor, gunicorn and the pool process ---------------------------------


class _Gunicorn(BaseApplication):
    def __init__(self, app_factory: Callable[[], Flask], options: dict[str, Any]):
        self._app_factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # newer settings are skipped on older gunicorn
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app_factory()


def gunicorn_options(bind: str, http_threads: int) -> dict[str, Any]:
    # One worker process: webhook counters live in its memory, and intake is light
    # work that threads cover; the pool does the heavy lifting elsewhere.
    return {
        "bind": bind,
        "workers": 1,
        "worker_class": "gthread",
        "threads": http_threads,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "sluice-http",
        # gunicornc could change the worker count; and its default socket path is
        # shared by every instance on the host.
        "control_socket_disable": True,
    }


def _http_main(config: ServerConfig, bind: str, http_threads: int, role: Role) -> None:
    _setup_logging()
    _Gunicorn(lambda: build_http_app(config, role), gunicorn_options(bind, http_threads)).run()


def _front_main(bind: str, upstream: str) -> None:
    _setup_logging()
    front.serve(bind, upstream, MAX_BODY_BYTES)


def _pool_main(config: ServerConfig, runner_factory: RunnerFactory, parent_pid: int) -> None:
    _setup_logging()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner = runner_factory(config)
    database = open_for(config, synchronous="NORMAL", max_connections=config.workers + 4)
    pool = WorkerPool(
        JobQueue(database, replica=replica_of(config)),
        runner.handle,
        config.workers,
        on_give_up=runner.on_give_up,
        pool_id=new_pool_id(config),
    )
    pool.start()
    log.info("job worker pool started: %d threads (pid %d)", config.workers, os.getpid())
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            log.error("sluice serve went away; stopping the job workers")
            break
    pool.stop(POOL_STOP_TIMEOUT_S)
    log.info("job worker pool stopped")


def new_pool_id(config: ServerConfig) -> str:
    return f"{pool_prefix(config)}{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Supervisor:
    """Runs the HTTP and job processes; restarts the job process when it dies."""

    def __init__(
        self,
        config: ServerConfig,
        bind: str,
        runner_factory: RunnerFactory,
        http_threads: int,
        role: Role = "all",
    ):
        self.config = config
        self.bind = bind
        self.runner_factory = runner_factory
        self.http_threads = http_threads
        self.role = role
        # spawn: children start clean instead of inheriting this process's state.
        self._ctx = multiprocessing.get_context("spawn")
        # gunicorn listens here; a short path (sun_path holds 108 bytes), mode 0700.
        self._socket_dir = tempfile.mkdtemp(prefix="sluice-http-")
        self._upstream = os.path.join(self._socket_dir, "gunicorn.sock")
        self._stopping = False

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        http = self._start_http()
        front = self._start_front()
        pool = self._start_pool() if self.role != "intake" else None
        restarts = 0
        exit_code = 0
        try:
            while not self._stopping:
                wait([p.sentinel for p in (http, front, pool) if p is not None], timeout=0.5)
                if self._stopping:
                    break
                if not front.is_alive():
                    log.error("the intake front exited (code %s); stopping", front.exitcode)
                    exit_code = front.exitcode or 1
                    break
                if not http.is_alive():
                    log.error("the HTTP server exited (code %s); stopping", http.exitcode)
                    exit_code = http.exitcode or 1
                    break
                if pool is not None and not pool.is_alive():
                    delay = _RESTART_BACKOFF_S[min(restarts, len(_RESTART_BACKOFF_S) - 1)]
                    log.error(
                        "the job worker process exited (code %s); restarting in %.0fs",
                        pool.exitcode,
                        delay,
                    )
                    if self._sleep(delay):
                        break
                    restarts += 1
                    pool = self._start_pool()
        finally:
            self._shutdown(*(p for p in (front, http, pool) if p is not None))
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return exit_code

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True if asked to stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        return self._stopping

    def _start_http(self) -> multiprocessing.process.BaseProcess:
        process = self._ctx.Process(
            target=_http_main,
            args=(self.config, f"unix:{self._upstream}", self.http_threads, self.role),
            name="sluice-http",
        )
        process.start()
        return process

    def _start_front(self) -> multiprocessing.process.BaseProcess:
        process = self._ctx.Process(
            target=_front_main, args=(self.bind, self._upstream), name="sluice-front"
        )
        process.start()
        return process

    def _start_pool(self) -> multiprocessing.process.BaseProcess:
        process = self._ctx.Process(
            target=_pool_main,
            args=(self.config, self.runner_factory, os.getpid()),
            name="sluice-jobs",
        )
        process.start()
        log.info("job worker process started (pid %s)", process.pid)
        return process

    @staticmethod
    def _shutdown(*processes: multiprocessing.process.BaseProcess) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: gunicorn and the pool both stop gracefully
        deadline = time.monotonic() + POOL_STOP_TIMEOUT_S + 5
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                log.error("%s did not stop in time; killing it", process.name)
                process.kill()
                process.join(5)


def _setup_logging() -> None:
    """Log to stderr, unless the caller (the CLI) configured logging already."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"
    )


# -- development: one process ------------------------------------------------------------


def _run_dev(config: ServerConfig, bind: str, runner_factory: RunnerFactory) -> int:
    host, _, port = bind.rpartition(":")
    queue = JobQueue(open_for(config), replica=replica_of(config))
    runner = runner_factory(config)
    pool = WorkerPool(
        queue,
        runner.handle,
        config.workers,
        on_give_up=runner.on_give_up,
        pool_id=new_pool_id(config),
    )

    def readiness() -> tuple[bool, str]:
        ok, reason = queue.ping()
        if ok and not pool.alive():
            return False, "job worker threads have died"
        return ok, reason

    app = create_app(config, queue, Metrics(queue), readiness, on_enqueued=lambda _id: pool.wake())

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # werkzeug's server loop exits cleanly on it

    signal.signal(signal.SIGTERM, on_term)
    pool.start()
    try:
        app.run(host=host or "127.0.0.1", port=int(port), threaded=True, use_reloader=False)
    finally:
        pool.stop(POOL_STOP_TIMEOUT_S)
    return 0
