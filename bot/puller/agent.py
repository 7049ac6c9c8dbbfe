"""The puller's reconcile loop: ledger → verify → render → policy → apply → health → report.

A cycle runs every ``interval_s`` and when woken. It fetches the mirror, checks
that the ledger tip is signed by a trusted bot key (and did not move backwards),
then, per owned app and under that app's lock:

* takes the revision the ledger names (the entry's own commit must be signed by
  the bot and the revision reachable from the tracked branch);
* verifies the revision's commit signatures per the signature mode;
* renders the app as ``.sluice.yaml`` AT THE REVISION defines it;
* evaluates the policies found at the revision; a deny passes only with a
  ``policy_override`` recorded in the (signed) ledger entry's gates;
* applies, prunes by inventory, waits for health, records history, tells the bot.

Gate settings (signature mode, policy paths and package, ``sync_before_merge``)
come from ``.sluice.yaml`` at the TRACKED BRANCH TIP, never from the revision
being judged, so a revision cannot relax the checks applied to itself.

A revision already applied is not applied again: the cycle only checks drift,
reports it, and re-applies when the app sets ``self_heal`` or when the app was
woken (``/sync``). A wake-up is never an approval: it only makes the cycle run
now, and the cycle deploys nothing the ledger does not name.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.config import REPO_CONFIG_FILE, ConfigError, RepoConfig, parse_repo_config
from bot.deploy.ledger import APPS_DIR, LedgerEntry, LedgerError, VerifiedLedger, verify_tip
from bot.diff import load_or_create_key, mask_secret, normalize
from bot.exports import ExportCache
from bot.gitops import Git, GitError, Mirrors
from bot.models import App, K8sObject, ObjectChange
from bot.policy import make_engine
from bot.preview import load_policy_sources
from bot.puller.cluster import ClusterError
from bot.puller.config import PullerConfig
from bot.puller.events import EventReporter
from bot.puller.frontier import StateFrontierStore
from bot.puller.history import HistoryStore, LastResult
from bot.puller.metrics import PullerMetrics
from bot.puller.plan import PlanError
from bot.puller.verify import ChainVerifier, Refused
from bot.render import RenderCache, render_app
from bot.signatures import TrustedKeys, TrustedKeysError

log = logging.getLogger(__name__)

MIRROR_KEY = "gitops"
_LEDGER_STATE_KEY = "ledger_commit"
_MAX_LISTED_PROBLEMS = 5


@dataclass
class AppState:
    """What the puller knows about one app; ``to_dict`` is PULLER_API.md's AppStatus."""

    name: str
    revision: str | None = None
    ledger_commit: str | None = None
    desired_revision: str | None = None
    phase: str = "Idle"
    health: str = "Unknown"
    message: str = ""
    pr: int | None = None
    drift: list[ObjectChange] = field(default_factory=list)
    # The deployed revision's app definition and rendered objects (for drift checks).
    app: App | None = None
    objects: list[K8sObject] | None = None
    drift_reported: tuple[tuple[str, ...], ...] | None = None
    refusal: tuple[str | None, str | None, str] | None = None

    def to_dict(self, history: list[LastResult]) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "ledger_commit": self.ledger_commit,
            "desired_revision": self.desired_revision,
            "phase": self.phase,
            "health": self.health,
            "message": self.message,
            "drift": [change.to_dict() for change in self.drift],
            "last_result": history[0].to_dict() if history else None,
            "history": [result.to_dict() for result in history],
        }


class AppLocks:
    """One lock per app: a deploy, a sync and a drift fix of one app never overlap."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, app: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(app, threading.Lock())
        with lock:
            yield


@dataclass(frozen=True)
class _Cycle:
    """What every app of one cycle shares."""

    git: Git
    ledger: VerifiedLedger
    tracked: str
    gate: RepoConfig


@dataclass
class _Plan:
    """A verified, rendered revision ready to apply."""

    entry: LedgerEntry
    ledger_commit: str
    app: App
    objects: list[K8sObject]
    note: str = ""


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
    ) -> None:
        self.config = config
        self.applier = applier
        data = config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.store = store or HistoryStore(data / "puller.db", limit=config.history_limit)
        self.reporter = reporter or EventReporter(self.store, config.events_url, config.api_token)
        self.metrics = metrics or PullerMetrics()
        self.secret_key = load_or_create_key(data / "fingerprint.key")
        self._clock = clock
        self._api_probe = api_probe
        self._health_poll_s = health_poll_s
        self._mirrors = Mirrors(data / "mirrors")
        self._exports = ExportCache(data / "exports")
        self._renders = RenderCache(data / "renders")
        self._chain = ChainVerifier(
            StateFrontierStore(self.store),
            repository=config.repo_url,
            trust_anchor=config.trust_anchor,
            trusted_keys=config.trusted_keys,
            cache_dir=data / "signatures",
        )
        self._locks = AppLocks()
        self._states_lock = threading.Lock()
        self._states: dict[str, AppState] = {}
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
        with self._states_lock:
            state = self._states.get(app)
            if state is None:
                state = AppState(name=app)
                last = self.store.last_applied(app)
                if last is not None:
                    state.revision = last.revision
                    state.ledger_commit = last.ledger_commit
                    state.pr = last.pr
                    state.health = last.health
                    state.phase = "Synced" if last.result == "succeeded" else "Failed"
                self._states[app] = state
            return state

    def known_apps(self) -> list[str]:
        with self._states_lock:
            return sorted(self._states)

    def status(self, app: str) -> dict[str, Any] | None:
        if not self.owns(app):
            return None
        with self._states_lock:
            known = app in self._states
        if not known and not self.store.history(app):
            return None
        return self._state(app).to_dict(self.store.history(app))

    def statuses(self) -> list[dict[str, Any]]:
        return [s for s in (self.status(app) for app in self.known_apps()) if s is not None]

    # -- readiness

    def readiness(self) -> list[str]:
        """Problems that make the puller unready (empty when ready)."""
        problems = []
        if self._api_probe is not None:
            try:
                self._api_probe()
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
                problems.append(f"kubernetes API not reachable ({type(exc).__name__})")
        if self._ledger_error is not None:
            problems.append(f"ledger: {self._ledger_error}")
        return problems

    # -- waking and the loop

    def wake(self, app: str | None = None) -> list[str]:
        """Queue a cycle now (for ``app`` or every app); returns the apps queued."""
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
        self._thread = threading.Thread(target=self.run_forever, name="sluice-puller", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def run_forever(self) -> None:
        """Cycle every interval, and at once for apps that were woken, until :meth:`stop`."""
        deadline = 0.0  # the first cycle runs at once
        while not self._stop.is_set():
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
            cycle = self._open_cycle()
        except Refused as exc:
            self._ledger_error = str(exc)
            log.error("puller cycle refused: %s", exc)
            for name in sorted(set(apps or exc.apps) | set(self.known_apps())):
                if self.owns(name):
                    self._refuse(self._state(name), None, None, exc)
            return False
        self._ledger_error = None
        names = self._ledger_apps(cycle)
        if apps is not None:
            names = [n for n in names if n in apps]
            for missing in sorted(set(apps) - set(names)):
                if self.owns(missing):
                    state = self._state(missing)
                    state.message = f"the ledger at {cycle.ledger.tip[:12]} names no revision"
        ok = True
        for name in names:
            with self._locks.hold(name):
                ok = self._reconcile(cycle, self._state(name), woken=woken) and ok
        self.store.set_state(_LEDGER_STATE_KEY, cycle.ledger.tip)
        return ok

    def _open_cycle(self) -> _Cycle:
        config = self.config
        try:
            git = self._mirrors.fetch(
                MIRROR_KEY,
                config.repo_url,
                [config.tracked_ref, config.ledger_ref],
                auth=config.git_auth,
            )
            tracked = git.resolve(config.tracked_ref)
        except GitError as exc:
            raise Refused(f"cannot fetch {config.tracked_branch} and the ledger: {exc}") from None
        try:
            bot_keys = TrustedKeys.load(config.bot_keys)
            ledger = verify_tip(
                git,
                bot_keys,
                config.ledger_branch,
                not_before=self.store.get_state(_LEDGER_STATE_KEY),
            )
        except (LedgerError, TrustedKeysError, GitError) as exc:
            refused = Refused(f"ledger refused: {exc}")
            # Untrusted, but good enough to say which apps are held and why.
            refused.apps = self._named_apps(git, config.ledger_ref)
            raise refused from None
        try:
            self._chain.check_anchor(git, tracked, config.tracked_branch)
        except Refused as exc:
            exc.apps = self._named_apps(git, ledger.tip)
            raise
        gate = _repo_config(git, tracked, f"{config.tracked_branch} ({tracked[:12]})")
        return _Cycle(git=git, ledger=ledger, tracked=tracked, gate=gate)

    def _ledger_apps(self, cycle: _Cycle) -> list[str]:
        return self._named_apps(cycle.git, cycle.ledger.tip)

    def _named_apps(self, git: Git, ledger: str) -> list[str]:
        """Owned apps with an entry in the ledger commit ``ledger``."""
        try:
            entries = git.tree(ledger, APPS_DIR)
        except GitError:
            return []
        names = []
        for entry in entries:
            name = entry.path.removeprefix(f"{APPS_DIR}/").removesuffix(".yaml")
            if entry.path.endswith(".yaml") and "/" not in name and self.owns(name):
                names.append(name)
        return sorted(names)

    def _reconcile(self, cycle: _Cycle, state: AppState, *, woken: bool) -> bool:
        try:
            entry, writer = self._approved(cycle, state.name)
        except Refused as exc:
            self._refuse(state, None, None, exc)
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
            return self._check_drift(cycle, state, woken=woken)
        try:
            plan = self._prepare(cycle, state, entry, writer)
        except Refused as exc:
            self._refuse(state, entry, writer, exc)
            return False
        return self._deploy(state, plan, action=entry.action)

    def _approved(self, cycle: _Cycle, name: str) -> tuple[LedgerEntry, str]:
        gate_app = cycle.gate.app(name)
        allow_preview = bool(gate_app and gate_app.sync_before_merge)
        try:
            if allow_preview:
                self._fetch_preview(cycle, name)
            entry = cycle.ledger.approved_revision(
                name, self.config.tracked_ref, allow_preview_deploy=allow_preview
            )
        except (LedgerError, GitError) as exc:
            raise Refused(str(exc)) from None
        path = f"{APPS_DIR}/{name}.yaml"
        writer = cycle.git.run("log", "-1", "--format=%H", cycle.ledger.tip, "--", path)
        return entry, writer.decode().strip()

    def _fetch_preview(self, cycle: _Cycle, name: str) -> None:
        """A preview-deploy names an open pull request's head, which the tracked branch
        and the ledger do not bring along: fetch it by SHA, else by the forge's PR ref."""
        entry = cycle.ledger.entry(name)
        if entry is None or entry.action != "preview-deploy":
            return
        if cycle.git.run("cat-file", "-t", entry.revision, check=False).strip() == b"commit":
            return
        wants = [[entry.revision]]
        if entry.pr is not None:
            wants += [[f"refs/pull/{entry.pr}/head"], [f"refs/merge-requests/{entry.pr}/head"]]
        problem: GitError | None = None
        for want in wants:
            try:
                self._mirrors.fetch(MIRROR_KEY, self.config.repo_url, want,
                                    auth=self.config.git_auth)  # fmt: skip
            except GitError as exc:
                problem = problem or exc
                continue
            if cycle.git.run("cat-file", "-t", entry.revision, check=False).strip() == b"commit":
                return
        raise LedgerError(
            f"app {name!r}: preview-deploy revision {entry.revision[:12]} could not be fetched"
            + (f" ({problem})" if problem else "")
        )

    # -- checks and render

    def _prepare(self, cycle: _Cycle, state: AppState, entry: LedgerEntry, writer: str) -> _Plan:
        self._chain.verify(cycle.git, entry.revision, cycle.gate.signatures.mode)
        app, objects = self._render(cycle.git, state.name, entry.revision)
        note = self._check_policy(cycle, app, entry, objects)
        return _Plan(entry=entry, ledger_commit=writer, app=app, objects=objects, note=note)

    def _render(self, git: Git, name: str, revision: str) -> tuple[App, list[K8sObject]]:
        config = _repo_config(git, revision, f"revision {revision[:12]}", phase="Failed")
        app = config.app(name)
        if app is None:
            raise Refused(
                f"{REPO_CONFIG_FILE} at revision {revision[:12]} defines no app {name!r}", "Failed"
            )
        with self._exports.lease(git, revision) as root:
            rendered = render_app(app, root, cache=self._renders)
        if rendered.error:
            raise Refused(f"render failed at {revision[:12]}: {rendered.error}", "Failed")
        return app, [normalize(obj, app.namespace) for obj in rendered.objects]

    def _check_policy(
        self, cycle: _Cycle, app: App, entry: LedgerEntry, objects: list[K8sObject]
    ) -> str:
        settings = cycle.gate.policy
        sources = load_policy_sources(cycle.git, entry.revision, settings.paths)
        masked = [mask_secret(obj, self.secret_key) for obj in objects]
        meta = {"name": app.name, "path": app.path, "namespace": app.namespace}
        with make_engine(self.config.policy_engine, sources, package=settings.package) as engine:
            result = engine.evaluate(masked, meta)
        if result.verdict == "error":
            raise Refused(f"policy could not be evaluated: {result.error}")
        if result.verdict != "fail":
            return ""
        denials = [v for v in result.violations if v.severity == "deny"]
        listed = "; ".join(
            f"{v.rule}: {v.msg}" + (f" ({v.kind}/{v.name})" if v.kind else "")
            for v in denials[:_MAX_LISTED_PROBLEMS]
        )
        override = entry.gates.get("policy_override")
        overridden = entry.gates.get("policy") == "overridden"
        if overridden and isinstance(override, dict) and override.get("by"):
            return f"policy denials overridden by {override['by']} as recorded in the ledger"
        raise Refused(f"policy denies revision {entry.revision[:12]}: {listed}")

    # -- apply

    def _deploy(self, state: AppState, plan: _Plan, *, action: str, heal: bool = False) -> bool:
        entry = plan.entry
        started = self._clock()
        state.phase = "Syncing"
        state.message = f"applying {entry.revision[:12]}"
        applied = self.applier.apply(
            plan.app.name, plan.objects, allow_mass_prune=plan.app.allow_mass_prune, heal=heal
        )
        if applied.ok:
            state.revision, state.ledger_commit, state.pr = (
                entry.revision,
                plan.ledger_commit,
                entry.pr,
            )
            state.app, state.objects = plan.app, plan.objects
            state.refusal = None
            report = self.applier.wait_healthy(
                plan.app.name,
                plan.objects,
                timeout_s=self.config.health_timeout_s,
                poll_s=self._health_poll_s,
            )
            state.health = report.status
            succeeded = report.status == "Healthy"
            message = (
                f"{entry.revision[:12]} applied and healthy"
                if succeeded
                else f"{entry.revision[:12]} applied but {report.status} "
                f"after {self.config.health_timeout_s:g}s"
            )
        else:
            succeeded = False
            errors = "; ".join(applied.errors[:_MAX_LISTED_PROBLEMS])
            message = f"apply of {entry.revision[:12]} failed: {errors}"
        if plan.note:
            message = f"{message} ({plan.note})"
        result = LastResult(
            revision=entry.revision,
            ledger_commit=plan.ledger_commit,
            action=action,  # type: ignore[arg-type]
            pr=entry.pr,
            result="succeeded" if succeeded else "failed",
            health=state.health,
            created=len(applied.created),
            updated=len(applied.updated),
            unchanged=len(applied.unchanged),
            pruned=len(applied.pruned),
            started_at=_iso(started),
            finished_at=_iso(self._clock()),
            duration_s=round(self._clock() - started, 3),
            message=message,
        )
        self.store.record(state.name, result, applied=applied.ok)
        self.metrics.synced(state.name, result.result, result.duration_s)
        if applied.ok:
            self.metrics.drift(state.name, 0)  # before the phase shows: what was applied is live
        state.phase = "Synced" if succeeded else "Failed"
        state.message = message
        self._send_result(state.name, result)
        if applied.ok:
            state.drift = []
            self._publish_drift(state, [])
        return succeeded

    def _refuse(
        self, state: AppState, entry: LedgerEntry | None, writer: str | None, exc: Refused
    ) -> None:
        """Nothing is applied; the app shows why and the bot hears it once per distinct cause."""
        message = str(exc)
        if entry is not None:
            state.desired_revision = entry.revision
        key = (writer, entry.revision if entry else None, message)
        if state.refusal == key:
            state.phase, state.message = exc.phase, message
            return
        state.refusal = key
        log.warning("app %s: nothing applied: %s", state.name, message)
        now = _iso(self._clock())
        result = LastResult(
            revision=entry.revision if entry else "",
            ledger_commit=writer or "",
            action=entry.action if entry else "deploy",
            pr=entry.pr if entry else None,
            result="failed",
            health=state.health,
            created=0,
            updated=0,
            unchanged=0,
            pruned=0,
            started_at=now,
            finished_at=now,
            duration_s=0.0,
            message=message,
        )
        self.store.record(state.name, result, applied=False)
        # Shown only now, so a reader who sees the phase also finds the result in history.
        state.phase, state.message = exc.phase, message
        self.metrics.synced(state.name, "refused", 0.0)
        self._send_result(state.name, result)

    def _send_result(self, app: str, result: LastResult) -> None:
        self.reporter.send(
            {
                "type": "deploy",
                "app": app,
                "ledger_commit": result.ledger_commit or None,
                "revision": result.revision or None,
                "pr": result.pr,
                "result": result.to_dict(),
            }
        )

    # -- drift

    def _check_drift(self, cycle: _Cycle, state: AppState, *, woken: bool) -> bool:
        if state.revision is None:
            return state.phase != "Failed"
        if state.objects is None or state.app is None:
            try:
                state.app, state.objects = self._render(cycle.git, state.name, state.revision)
            except Refused as exc:
                state.message = f"cannot check drift: {exc}"
                return False
        app, objects = state.app, state.objects
        drift = self._drift(state)
        if drift is None:
            return False
        if drift and (app.self_heal or woken):
            plan = _Plan(
                entry=_entry_for(state),
                ledger_commit=state.ledger_commit or "",
                app=app,
                objects=objects,
                note="self-heal" if app.self_heal and not woken else "sync",
            )
            self._publish_drift(state, drift)
            ok = self._deploy(state, plan, action="sync", heal=True)
            drift = self._drift(state)
            self._publish_drift(state, drift or [])
            return ok and drift == []
        self._publish_drift(state, drift)
        if state.phase in ("Idle", "Held") and state.refusal is None:
            state.phase = "Synced"
        if woken and state.refusal is None:
            self._record_in_sync(state, objects)
        return True

    def _record_in_sync(self, state: AppState, objects: list[K8sObject]) -> None:
        """A sync was asked for and nothing drifted: record that it was served, so whoever
        asked (``/sync`` waits for a new ``last_result``) gets an answer, not a timeout."""
        assert state.revision is not None
        now = self._clock()
        try:
            state.health = self.applier.health(state.name, objects).status
        except (ClusterError, PlanError) as exc:
            state.message = f"health check failed: {exc}"
        result = LastResult(
            revision=state.revision,
            ledger_commit=state.ledger_commit or "",
            action="sync",
            pr=state.pr,
            result="failed" if state.health == "Degraded" else "succeeded",
            health=state.health,
            created=0,
            updated=0,
            unchanged=len(objects),
            pruned=0,
            started_at=_iso(now),
            finished_at=_iso(now),
            duration_s=0.0,
            message=f"already in sync with {state.revision[:12]}: nothing to change",
        )
        self.store.record(state.name, result, applied=True)
        self.metrics.synced(state.name, result.result, 0.0)
        self._send_result(state.name, result)

    def _drift(self, state: AppState) -> list[ObjectChange] | None:
        """The app's drift now, or None (and a message) when the cluster cannot tell."""
        assert state.objects is not None
        try:
            return self.applier.drift(state.name, state.objects, secret_key=self.secret_key)
        except (ClusterError, PlanError) as exc:
            state.message = f"drift check failed: {exc}"
            return None

    def _publish_drift(self, state: AppState, drift: list[ObjectChange]) -> None:
        state.drift = drift
        self.metrics.drift(state.name, len(drift))
        signature = tuple(
            (c.action, c.api_version, c.kind, c.namespace or "", c.name, c.diff) for c in drift
        )
        if state.drift_reported == signature or (state.drift_reported is None and not drift):
            state.drift_reported = signature
            return
        state.drift_reported = signature
        self.reporter.send(
            {
                "type": "drift",
                "app": state.name,
                "revision": state.revision,
                "pr": state.pr,
                "drift": [change.to_dict() for change in drift],
            }
        )

    # -- live diff for the bot

    def diff(self, app: str, objects: list[K8sObject]) -> list[ObjectChange]:
        """Server-side dry run of ``objects`` against the live cluster, masked."""
        state = self._state(app)
        namespace = state.app.namespace if state.app is not None else None
        desired = [normalize(obj, namespace) for obj in objects]
        return self.applier.dry_run_diff(app, desired, secret_key=self.secret_key)


def _repo_config(git: Git, sha: str, where: str, *, phase: str = "Held") -> RepoConfig:
    raw = git.read_file(sha, REPO_CONFIG_FILE)
    if raw is None:
        raise Refused(f"{REPO_CONFIG_FILE} not found at {where}", phase)
    try:
        return parse_repo_config(raw, f"{REPO_CONFIG_FILE} at {where}")
    except ConfigError as exc:
        raise Refused(str(exc), phase) from None


def _entry_for(state: AppState) -> LedgerEntry:
    assert state.revision is not None
    return LedgerEntry(app=state.name, revision=state.revision, action="deploy", pr=state.pr)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
