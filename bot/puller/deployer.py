"""The apply decision carried out: apply a release, wait for health, record and report the result.

A refusal is recorded too (nothing applied), once per distinct cause, and a sync that
finds nothing to change is recorded as served, so whoever asked gets an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot.deploy.ledger import LedgerEntry
from bot.models import K8sObject
from bot.puller.cluster import ClusterError
from bot.puller.history import HistoryStore, LastResult
from bot.puller.live import ClusterSnapshot
from bot.puller.metrics import PullerMetrics
from bot.puller.plan import PlanError
from bot.puller.release import Release
from bot.puller.results import Results
from bot.puller.state import AppState, iso
from bot.puller.verify import MAX_LISTED_PROBLEMS, Refused

log = logging.getLogger(__name__)


class Deployer:
    """Applies releases through the applier and records every outcome."""

    def __init__(
        self,
        applier: Any,
        store: HistoryStore,
        results: Results,
        metrics: PullerMetrics,
        *,
        clock: Callable[[], float],
        health_timeout_s: float,
        health_poll_s: float,
    ) -> None:
        self.applier = applier
        self.store = store
        self.results = results
        self.metrics = metrics
        self._clock = clock
        self._health_timeout_s = health_timeout_s
        self._health_poll_s = health_poll_s

    def deploy(self, state: AppState, release: Release, *, action: str, heal: bool = False) -> bool:
        entry = release.entry
        started = self._clock()
        state.phase = "Syncing"
        state.message = f"applying {entry.revision[:12]}"
        applied = self.applier.apply(
            release.app.name,
            release.objects,
            allow_mass_prune=release.app.allow_mass_prune,
            heal=heal,
        )
        if applied.ok:
            state.revision, state.ledger_commit, state.pr = (
                entry.revision,
                release.ledger_commit,
                entry.pr,
            )
            state.app, state.objects = release.app, release.objects
            state.refusal = None
            report = self.applier.wait_healthy(
                release.app.name,
                release.objects,
                timeout_s=self._health_timeout_s,
                poll_s=self._health_poll_s,
            )
            state.health = report.status
            succeeded = report.status == "Healthy"
            message = (
                f"{entry.revision[:12]} applied and healthy"
                if succeeded
                else f"{entry.revision[:12]} applied but {report.status} "
                f"after {self._health_timeout_s:g}s"
            )
        else:
            succeeded = False
            errors = "; ".join(applied.errors[:MAX_LISTED_PROBLEMS])
            message = f"apply of {entry.revision[:12]} failed: {errors}"
        if release.note:
            message = f"{message} ({release.note})"
        result = LastResult(
            revision=entry.revision,
            ledger_commit=release.ledger_commit,
            action=action,  # type: ignore[arg-type]
            pr=entry.pr,
            result="succeeded" if succeeded else "failed",
            health=state.health,
            created=len(applied.created),
            updated=len(applied.updated),
            unchanged=len(applied.unchanged),
            pruned=len(applied.pruned),
            started_at=iso(started),
            finished_at=iso(self._clock()),
            duration_s=round(self._clock() - started, 3),
            message=message,
        )
        self.store.record(state.name, result, applied=applied.ok)
        self.metrics.synced(state.name, result.result, result.duration_s)
        if applied.ok:
            self.metrics.drift(state.name, 0)  # before the phase shows: what was applied is live
        state.phase = "Synced" if succeeded else "Failed"
        state.message = message
        self.results.send_result(state.name, result)
        if applied.ok:
            state.drift = []
            self.results.publish_drift(state, [])
        return succeeded

    def refuse(
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
        now = iso(self._clock())
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
        self.results.send_result(state.name, result)

    def record_in_sync(
        self, state: AppState, objects: list[K8sObject], snapshot: ClusterSnapshot
    ) -> None:
        """A sync was asked for and nothing drifted: record that it was served, so whoever
        asked (``/sync`` waits for a new ``last_result``) gets an answer, not a timeout."""
        assert state.revision is not None
        now = self._clock()
        try:
            state.health = self.applier.health(state.name, objects, snapshot=snapshot).status
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
            started_at=iso(now),
            finished_at=iso(now),
            duration_s=0.0,
            message=f"already in sync with {state.revision[:12]}: nothing to change",
        )
        self.store.record(state.name, result, applied=True)
        self.metrics.synced(state.name, result.result, 0.0)
        self.results.send_result(state.name, result)
