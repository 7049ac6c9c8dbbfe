"""Read-only looks at one app in the cluster: the live diff (a dry run), drift and health.

Nothing here writes. Objects the inventory holds and the desired objects lack show as
deletions; a missing object is a ``create``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from bot.models import ObjectChange
from bot.puller import drift as drift_mod
from bot.puller.cluster import Cluster, ClusterError
from bot.puller.health import HealthReport, ObjectHealth, aggregate, missing, object_health
from bot.puller.inventory import InventoryError, InventoryStore, ObjectRef
from bot.puller.live import ClusterSnapshot, LiveView, find_or_none, owner
from bot.puller.plan import Planned, plan
from bot.puller.secrets_scrub import scrub

Json = dict[str, Any]


class ClusterViews:
    """Dry-run diff, drift and health of one app's objects against the live cluster."""

    def __init__(self, cluster: Cluster, store: InventoryStore, *, field_manager: str) -> None:
        self.cluster = cluster
        self.store = store
        self.field_manager = field_manager

    def dry_run_diff(
        self, app: str, objects: list[Json], *, secret_key: bytes
    ) -> list[ObjectChange]:
        """Masked changes a server-side apply of ``objects`` would make, found by a
        dry run (``dryRun=All``): nothing is stored. Objects the inventory holds and
        ``objects`` lack show as deletions. Raises :class:`PlanError` for bad input and
        :class:`ClusterError` when the cluster cannot be read."""
        planned = plan(app, objects)
        live = LiveView(self.cluster, app)
        before: list[Json] = []
        after: list[Json] = []
        notes: dict[tuple[str, str, str], str] = {}
        for item in planned:
            current = find_or_none(live, item.ref)
            try:
                result = self.cluster.apply(
                    live.resource(item.ref),
                    item.body,
                    field_manager=self.field_manager,
                    force=True,
                    dry_run=True,
                )
            except ClusterError as exc:
                result = item.body
                if not (exc.not_found and _created_alongside(item, planned)):
                    notes[_diff_identity(item.ref)] = scrub(str(exc), item.body)
            if current is not None:
                before.append(current)
            after.append(result)
        before.extend(self._leftovers_live(app, planned, live))
        changes = drift_mod.result_changes(before, after, secret_key=secret_key)
        return [_with_note(change, notes) for change in changes]

    def snapshot(self) -> ClusterSnapshot:
        """A fresh view of every Sluice object, each kind listed at most once: share it
        between the drift and health checks of every app in one cycle."""
        return ClusterSnapshot(self.cluster)

    def drift(
        self,
        app: str,
        objects: list[Json],
        *,
        secret_key: bytes,
        snapshot: ClusterSnapshot | None = None,
    ) -> list[ObjectChange]:
        """Masked differences between the live cluster and ``objects``; changes nothing.
        A missing object is a ``create``, an inventory object no longer desired a
        ``delete``. Raises :class:`PlanError` or :class:`ClusterError`."""
        planned = plan(app, objects)
        live = LiveView(self.cluster, app, snapshot)
        observed = [drift_mod.Observed(item.body, find_or_none(live, item.ref)) for item in planned]
        observed.extend(
            drift_mod.Observed(None, obj) for obj in self._leftovers_live(app, planned, live)
        )
        return drift_mod.drift_changes(observed, secret_key=secret_key)

    def health(
        self, app: str, objects: list[Json], *, snapshot: ClusterSnapshot | None = None
    ) -> HealthReport:
        """Health of every object as it is live now (the app's is its worst object's)."""
        planned = plan(app, objects)
        live = LiveView(self.cluster, app, snapshot)
        results: list[ObjectHealth] = []
        for item in planned:
            ref = item.ref
            try:
                current = live.find(ref)
            except ClusterError as exc:
                results.append(ObjectHealth(ref.kind, ref.namespace, ref.name, "Unknown", str(exc)))
                continue
            results.append(
                object_health(current) if current else missing(ref.kind, ref.namespace, ref.name)
            )
        return aggregate(results)

    def wait_healthy(
        self,
        app: str,
        objects: list[Json],
        *,
        timeout_s: float,
        poll_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> HealthReport:
        """Poll health until Healthy or Degraded, or until ``timeout_s`` passed; then
        every object still not healthy counts as Degraded and ``timed_out`` is set."""
        deadline = clock() + timeout_s
        while True:
            report = self.health(app, objects)
            if report.status in ("Healthy", "Degraded"):
                return report
            remaining = deadline - clock()
            if remaining <= 0:
                return _timed_out(report, timeout_s)
            sleep(min(poll_s, remaining))

    def _leftovers_live(self, app: str, planned: Sequence[Planned], live: LiveView) -> list[Json]:
        """Live objects the inventory holds for ``app`` that ``planned`` lacks."""
        desired = {item.ref.identity for item in planned}
        try:
            stored = self.store.load(app)
        except InventoryError as exc:
            raise ClusterError(str(exc)) from None
        found: list[Json] = []
        for ref in sorted(stored, key=lambda r: r.identity):
            if ref.identity in desired:
                continue
            current = find_or_none(live, ref)
            if current is not None and owner(current) == app:
                found.append(current)
        return found


def _created_alongside(item: Planned, planned: Sequence[Planned]) -> bool:
    """Whether ``item``'s namespace or CRD is part of the same change (so a dry run of
    it alone cannot succeed yet)."""
    ref = item.ref
    for other in planned:
        if other.ref.kind == "Namespace" and other.ref.name == ref.namespace:
            return True
        if other.is_crd:
            spec = other.body.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind")
            if kind == ref.kind and spec.get("group") == ref.identity[0]:
                return True
    return False


def _diff_identity(ref: ObjectRef) -> tuple[str, str, str]:
    return (ref.kind, ref.namespace or "", ref.name)


def _with_note(change: ObjectChange, notes: dict[tuple[str, str, str], str]) -> ObjectChange:
    note = notes.get((change.kind, change.namespace or "", change.name))
    if not note:
        return change
    return replace(change, diff=f"{change.diff}# server-side dry run failed: {note}\n")


def _timed_out(report: HealthReport, timeout_s: float) -> HealthReport:
    objects = [
        item
        if item.status == "Healthy"
        else replace(
            item,
            status="Degraded",
            message=f"not healthy after {timeout_s:g}s"
            + (f": {item.message}" if item.message else f" ({item.status})"),
        )
        for item in report.objects
    ]
    return aggregate(objects, timed_out=True)
