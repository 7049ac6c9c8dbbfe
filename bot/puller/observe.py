"""The observe decision: is the deployed revision still what runs, and is drift corrected?

A revision already applied is not applied again: the cycle compares the live objects
with it, reports drift, and re-applies only when the app sets ``self_heal`` or was woken
(``/sync``). A wake-up is never an approval: it re-applies what is deployed, nothing else.
"""

from __future__ import annotations

from typing import Any

from bot.models import ObjectChange
from bot.puller.cluster import ClusterError
from bot.puller.deployer import Deployer
from bot.puller.live import ClusterSnapshot
from bot.puller.plan import PlanError
from bot.puller.release import Release, Releases
from bot.puller.results import Results
from bot.puller.state import AppState
from bot.puller.verify import Cycle, Refused


class DriftWatch:
    """Checks one deployed app against the cluster and heals it when asked or allowed."""

    def __init__(
        self,
        applier: Any,
        releases: Releases,
        deployer: Deployer,
        results: Results,
        *,
        secret_key: bytes,
    ) -> None:
        self.applier = applier
        self._releases = releases
        self._deployer = deployer
        self._results = results
        self._secret_key = secret_key

    def check(
        self, cycle: Cycle, state: AppState, *, woken: bool, snapshot: ClusterSnapshot
    ) -> bool:
        """``snapshot``: the cycle's one LIST per kind, shared by every app's drift and
        health check; after a heal the app is read afresh."""
        if state.revision is None:
            return state.phase != "Failed"
        if state.objects is None or state.app is None:
            try:
                state.app, state.objects = self._releases.render(
                    cycle.git, state.name, state.revision
                )
            except Refused as exc:
                state.message = f"cannot check drift: {exc}"
                return False
        app, objects = state.app, state.objects
        drift = self._drift(state, snapshot)
        if drift is None:
            return False
        if drift and (app.self_heal or woken):
            release = Release(
                entry=state.deployed_entry(),
                ledger_commit=state.ledger_commit or "",
                app=app,
                objects=objects,
                note="self-heal" if app.self_heal and not woken else "sync",
            )
            self._results.publish_drift(state, drift)
            ok = self._deployer.deploy(state, release, action="sync", heal=True)
            drift = self._drift(state, None)
            self._results.publish_drift(state, drift or [])
            return ok and drift == []
        self._results.publish_drift(state, drift)
        if state.phase in ("Idle", "Held") and state.refusal is None:
            state.phase = "Synced"
        if woken and state.refusal is None:
            self._deployer.record_in_sync(state, objects, snapshot)
        return True

    def _drift(
        self, state: AppState, snapshot: ClusterSnapshot | None
    ) -> list[ObjectChange] | None:
        """The app's drift now, or None (and a message) when the cluster cannot tell."""
        assert state.objects is not None
        try:
            return self.applier.drift(
                state.name, state.objects, secret_key=self._secret_key, snapshot=snapshot
            )
        except (ClusterError, PlanError) as exc:
            state.message = f"drift check failed: {exc}"
            return None
