"""The puller's reconcile loop: when each app is looked at, and in what order the decisions run.

A cycle runs every ``interval_s`` and when woken. It opens with the ledger
(:mod:`bot.puller.verify`), then, per owned app and under that app's lock: verify the
approved revision (ledger entry, reachability, the signature chain), plan it
(:mod:`bot.puller.release`: render and policy at the revision), apply it
(:mod:`bot.puller.deployer`), or, when it is deployed already, observe it
(:mod:`bot.puller.observe`: drift, self-heal, ``/sync``).

Gate settings (signature mode, policy paths and package, ``sync_before_merge``)
come from ``.sluice.yaml`` at the TRACKED BRANCH TIP, never from the revision
being judged, so a revision cannot relax the checks applied to itself.
A wake-up is never an approval: it only makes the cycle run now, and the cycle
deploys nothing the ledger does not name.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from bot.diff import load_or_create_key, normalize
from bot.gitops import Mirrors
from bot.models import K8sObject, ObjectChange
from bot.puller.config import PullerConfig
from bot.puller.deployer import Deployer
from bot.puller.events import EventReporter
from bot.puller.followers import Followers
from bot.puller.frontier import StateFrontierStore
from bot.puller.history import HistoryStore
from bot.puller.leader import LeaderElector
from bot.puller.live import ClusterSnapshot
from bot.puller.metrics import PullerMetrics
from bot.puller.observe import DriftWatch
from bot.puller.release import Releases
from bot.puller.results import Results
from bot.puller.state import AppLocks, AppState, AppStates
from bot.puller.verify import LEDGER_STATE_KEY, ChainVerifier, Cycle, LedgerGate, Refused

log = logging.getLogger(__name__)

FOLLOWER_FLUSH_S = 20.0


class PullerAgent:
    """Runs cycles (``run_cycle``) and the loop thread; serves state to the HTTP API."""

    def __init__(
        self,
        config: PullerConfig,
        applier: Any,
        *,
        store: HistoryStore | None = None,
        reporter: EventReporter | None = None,
        metrics: PullerMetrics | None = None,
        clock: Callable[[], float] = time.time,
        api_probe: Callable[[], None] | None = None,
        health_poll_s: float = 1.0,
        elector: LeaderElector | None = None,
    ) -> None:
        self.config = config
        self.applier = applier
        data = config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.store: Any = store or HistoryStore(data / "puller.db", limit=config.history_limit)
        self.reporter = reporter or EventReporter(self.store, config.events_url, config.api_token)
        self.metrics = metrics or PullerMetrics()
        self.secret_key = config.fingerprint_key or load_or_create_key(data / "fingerprint.key")
        self._api_probe = api_probe
        self._followers = Followers(elector, config.api_token)
        self._chain = ChainVerifier(
            StateFrontierStore(self.store),
            repository=config.repo_url,
            trust_anchor=config.trust_anchor,
            trusted_keys=config.trusted_keys,
            cache_dir=data / "signatures",
        )
        self._ledger = LedgerGate(
            config,
            Mirrors(data / "mirrors"),
            self._chain,
            last_ledger=lambda: self.store.get_state(LEDGER_STATE_KEY),
            owns=self.owns,
        )
        self._releases = Releases(
            data, policy_engine=config.policy_engine, secret_key=self.secret_key
        )
        results = Results(self.reporter, self.metrics)
        self._deployer = Deployer(
            applier,
            self.store,
            results,
            self.metrics,
            clock=clock,
            health_timeout_s=config.health_timeout_s,
            health_poll_s=health_poll_s,
        )
        self._drift = DriftWatch(
            applier, self._releases, self._deployer, results, secret_key=self.secret_key
        )
        self._locks = AppLocks()
        self._states = AppStates(self.store)
        self._ledger_error: str | None = "no cycle has run yet"
        self._wake = threading.Condition()
        self._pending: set[str] = set()
        self._pending_all = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- ownership and state

    def owns(self, app: str) -> bool:
        return any(fnmatch.fnmatchcase(app, pattern) for pattern in self.config.apps)

    def _state(self, app: str) -> AppState:
        return self._states.get(app)

    def known_apps(self) -> list[str]:
        return self._states.known()

    def status(self, app: str) -> dict[str, Any] | None:
        if not self.owns(app):
            return None
        if not self._followers.leading:
            return self._followers.status(self.store, app)
        if app not in self._states and not self.store.history(app):
            return None
        return self._state(app).to_dict(self.store.history(app))

    def statuses(self) -> list[dict[str, Any]]:
        names = self.known_apps() if self._followers.leading else self.store.published_apps()
        return [s for s in (self.status(app) for app in names) if s is not None]

    # -- readiness

    def readiness(self) -> list[str]:
        """Problems that make the puller unready (empty when ready)."""
        problems = []
        if self._api_probe is not None:
            try:
                self._api_probe()
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
                problems.append(f"kubernetes API not reachable ({type(exc).__name__})")
        if self._ledger_error is not None and self._followers.leading:
            # A follower runs no cycle: it is ready to answer from the cluster state.
            problems.append(f"ledger: {self._ledger_error}")
        return problems

    # -- waking and the loop

    def wake(self, app: str | None = None) -> list[str]:
        """Queue a cycle now (for ``app`` or every app); returns the apps queued. A replica
        that does not lead passes the wake on to the leader (:class:`WakeNotDelivered`
        when it cannot)."""
        if not self._followers.leading:
            return self._followers.forward_wake(app)
        with self._wake:
            if app is None:
                self._pending_all = True
                queued = self.known_apps()
            else:
                self._pending.add(app)
                queued = [app]
            self._wake.notify_all()
        return queued

    def start(self) -> None:
        self._followers.start()
        self._thread = threading.Thread(target=self.run_forever, name="sluice-puller", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._followers.stop()  # a clean stop releases the Lease
        self._ledger.close()

    def run_forever(self) -> None:
        """Cycle every interval, and at once for apps that were woken, until :meth:`stop`."""
        deadline = 0.0  # the first cycle runs at once
        leading = False
        next_flush = 0.0
        while not self._stop.is_set():
            if not self._followers.leading:
                leading = False  # only the leader writes: wait until this replica leads
                if time.monotonic() >= next_flush:
                    # Events this pod queued while it led (its outbox is its own) still
                    # reach the bot when another replica leads now.
                    self.reporter.flush()
                    next_flush = time.monotonic() + FOLLOWER_FLUSH_S
                self._stop.wait(self._followers.retry_s)
                continue
            if not leading:
                # A new leader starts from the state in the cluster, not from what it
                # cached while it followed.
                leading, deadline = True, 0.0
                self._states = AppStates(self.store)
            with self._wake:
                remaining = deadline - time.monotonic()
                if remaining > 0 and not self._pending and not self._pending_all:
                    self._wake.wait(timeout=remaining)
                woken_all, woken = self._pending_all, set(self._pending)
                self._pending_all, self._pending = False, set()
            if self._stop.is_set():
                return
            if woken_all or woken:
                self._guarded_cycle(None if woken_all else woken, woken=True)
            elif time.monotonic() >= deadline:
                self._guarded_cycle(None, woken=False)
                deadline = time.monotonic() + self.config.interval_s

    def _guarded_cycle(self, apps: Collection[str] | None, *, woken: bool) -> None:
        try:
            self.run_cycle(apps, woken=woken)
        except Exception:
            # The loop must survive anything one cycle hits; the next cycle retries.
            log.exception("puller cycle failed")

    # -- one cycle

    def run_cycle(self, apps: Collection[str] | None = None, *, woken: bool = False) -> bool:
        """Reconcile ``apps`` (default: every owned app the ledger names); True if all is well.

        ``woken``: the apps were asked for (``/v1/wake``): drift is corrected even
        without ``self_heal``, and a failed deploy is retried.
        """
        self.reporter.flush()
        try:
            cycle = self._ledger.open_cycle()
        except Refused as exc:
            self._ledger_error = str(exc)
            log.error("puller cycle refused: %s", exc)
            for name in sorted(set(apps or exc.apps) | set(self.known_apps())):
                if self.owns(name):
                    self._deployer.refuse(self._state(name), None, None, exc)
                    self._followers.publish(self.store, self._state(name))
            return False
        self._ledger_error = None
        names = self._ledger.named_apps(cycle.git, cycle.ledger.tip)
        if apps is not None:
            names = [n for n in names if n in apps]
            for missing in sorted(set(apps) - set(names)):
                if self.owns(missing):
                    state = self._state(missing)
                    state.message = f"the ledger at {cycle.ledger.tip[:12]} names no revision"
        ok = True
        snapshot = self.applier.snapshot()  # one LIST per kind for every app's drift and health
        for name in names:
            with self._locks.hold(name):
                state = self._state(name)
                ok = self._reconcile(cycle, state, woken=woken, snapshot=snapshot) and ok
                self._followers.publish(self.store, state)
        self.store.set_state(LEDGER_STATE_KEY, cycle.ledger.tip)
        return ok

    def _reconcile(
        self, cycle: Cycle, state: AppState, *, woken: bool, snapshot: ClusterSnapshot
    ) -> bool:
        try:
            entry, writer = self._ledger.approved(cycle, state.name)
        except Refused as exc:
            self._deployer.refuse(state, None, None, exc)
            return False
        state.desired_revision = entry.revision
        if state.revision == entry.revision:
            if state.refusal is not None:
                # The ledger names what runs again: nothing is held any more.
                state.refusal = None
                last = self.store.last_applied(state.name)
                state.phase = "Synced" if last and last.result == "succeeded" else "Failed"
                state.message = f"the ledger names {entry.revision[:12]} again, which is deployed"
            # Applied already (healthy or not): re-applying the same objects changes
            # nothing, so only drift is looked at. A failed apply is retried instead.
            return self._drift.check(cycle, state, woken=woken, snapshot=snapshot)
        try:
            self._chain.verify(cycle.git, entry.revision, cycle.gate.signatures.mode)
            release = self._releases.prepare(cycle, state.name, entry, writer)
        except Refused as exc:
            self._deployer.refuse(state, entry, writer, exc)
            return False
        return self._deployer.deploy(state, release, action=entry.action)

    # -- live diff for the bot

    def diff(self, app: str, objects: list[K8sObject]) -> list[ObjectChange]:
        """Server-side dry run of ``objects`` against the live cluster, masked."""
        state = self._state(app)
        namespace = state.app.namespace if state.app is not None else None
        desired = [normalize(obj, namespace) for obj in objects]
        return self.applier.dry_run_diff(app, desired, secret_key=self.secret_key)
