"""Converge the cluster to an app's rendered objects: server-side apply, prune, health.

Rules (what Argo CD and Flux do, and what users complain they do not):

* Every object is applied with server-side apply under field manager ``sluice``, in
  waves (see :mod:`bot.puller.plan`); after a wave's CustomResourceDefinitions the
  puller waits for them to be established and refreshes discovery, so custom
  resources in the same apply resolve. A wave with an error stops the later waves
  (like Argo CD's sync waves): they may depend on it. Objects in the same wave still go.
* No write for an unchanged object: each applied object carries
  ``sluice.dev/applied-hash`` (sha256 of the desired object). Live objects are read with
  one labelled LIST per kind; an object whose live hash matches is left alone, so a
  cycle that changes nothing makes no write at all. ``heal=True`` re-applies objects
  whose live fields drifted even though their hash matches (``/sync``, ``self_heal``).
* The inventory (a ConfigMap per app, see :mod:`bot.puller.inventory`) is the only
  thing pruning trusts. It is widened to include every desired object *before* the
  first write, so a puller killed mid-apply never forgets what it created. Prune =
  stored inventory minus desired, and only objects that still carry this app's label
  (an object another app took over is released, not deleted). Objects that carry this
  app's labels but are not in the inventory are never touched. Nothing is pruned when
  the render is empty, when any apply failed, or when more than ``max_prune_ratio`` of
  the inventory would go without ``allow_mass_prune`` (the apply still happens).
* An object another Sluice app owns (its ``sluice.dev/app`` label) is not taken over.
* API errors become per-object error strings (kind, name and the API server's message,
  with a Secret's values cut out); they never stop the objects beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.dynamic.resource import Resource

from bot.models import ObjectChange
from bot.puller import drift as drift_mod
from bot.puller.cluster import Cluster, ClusterError, RetryPolicy
from bot.puller.health import HealthReport, ObjectHealth, aggregate, missing, object_health
from bot.puller.inventory import APP_LABEL, InventoryError, InventoryStore, ObjectRef
from bot.puller.plan import CRD_RANK, NAMESPACE_RANK, PlanError, Planned, kind_rank, plan
from bot.puller.secrets_scrub import scrub

Json = dict[str, Any]
CRD_ESTABLISH_TIMEOUT_S = 30.0
CRD_ESTABLISH_POLL_S = 0.2


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did; every entry reads ``Kind namespace/name``."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "pruned": len(self.pruned),
            "errors": len(self.errors),
        }


class Applier:
    """Apply, prune, diff, drift-check and health-check one app's objects."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        field_manager: str = "sluice",
        discovery_cache: Path | None = None,
        max_prune_ratio: float = 0.5,
        store: InventoryStore | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not 0.0 <= max_prune_ratio <= 1.0:
            raise ValueError(f"max_prune_ratio must be within 0..1, got {max_prune_ratio}")
        self.cluster = Cluster(api_client, discovery_cache=discovery_cache, retry=retry)
        self.field_manager = field_manager
        self.max_prune_ratio = max_prune_ratio
        self.store = store or InventoryStore(self.cluster, field_manager=field_manager)

    # -- apply -------------------------------------------------------------------

    def apply(
        self,
        app: str,
        objects: list[Json],
        *,
        allow_mass_prune: bool = False,
        force_conflicts: bool = True,
        heal: bool = False,
    ) -> ApplyResult:
        if not objects:
            return ApplyResult(
                errors=["the render produced no objects: nothing applied, nothing pruned"]
            )
        try:
            planned = plan(app, objects)
            stored = self.store.load(app)
        except (PlanError, InventoryError) as exc:
            return ApplyResult(errors=[f"nothing applied: {exc}"])
        run = _Run(self, app, force_conflicts=force_conflicts, heal=heal)
        desired = {p.ref.identity: p.ref for p in planned}
        widened = {ref.identity: ref for ref in stored} | desired
        try:
            self.store.save(app, widened.values())
        except InventoryError as exc:
            return ApplyResult(errors=[f"nothing applied: {exc}"])
        run.apply_waves(planned)
        leftovers = [ref for ref in stored if ref.identity not in desired]
        kept = run.prune(leftovers, inventory_size=len(stored), allow_mass_prune=allow_mass_prune)
        try:
            self.store.save(app, [*desired.values(), *kept])
        except InventoryError as exc:
            run.errors.append(str(exc))
        return run.result()

    # -- read-only views ---------------------------------------------------------

    def dry_run_diff(
        self, app: str, objects: list[Json], *, secret_key: bytes
    ) -> list[ObjectChange]:
        """Masked changes a server-side apply of ``objects`` would make, found by a
        dry run (``dryRun=All``): nothing is stored. Objects the inventory holds and
        ``objects`` lack show as deletions. Raises :class:`PlanError` for bad input and
        :class:`ClusterError` when the cluster cannot be read."""
        planned = plan(app, objects)
        live = _LiveView(self.cluster, app)
        before: list[Json] = []
        after: list[Json] = []
        notes: dict[tuple[str, str, str], str] = {}
        for item in planned:
            current = _find_or_none(live, item.ref)
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

    def drift(self, app: str, objects: list[Json], *, secret_key: bytes) -> list[ObjectChange]:
        """Masked differences between the live cluster and ``objects``; changes nothing.
        A missing object is a ``create``, an inventory object no longer desired a
        ``delete``. Raises :class:`PlanError` or :class:`ClusterError`."""
        planned = plan(app, objects)
        live = _LiveView(self.cluster, app)
        observed = [
            drift_mod.Observed(item.body, _find_or_none(live, item.ref)) for item in planned
        ]
        observed.extend(
            drift_mod.Observed(None, obj) for obj in self._leftovers_live(app, planned, live)
        )
        return drift_mod.drift_changes(observed, secret_key=secret_key)

    def health(self, app: str, objects: list[Json]) -> HealthReport:
        """Health of every object as it is live now (the app's is its worst object's)."""
        planned = plan(app, objects)
        live = _LiveView(self.cluster, app)
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

    # -- helpers -----------------------------------------------------------------

    def _leftovers_live(self, app: str, planned: Sequence[Planned], live: _LiveView) -> list[Json]:
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
            current = _find_or_none(live, ref)
            if current is not None and _owner(current) == app:
                found.append(current)
        return found


class _LiveView:
    """Live objects as one call sees them: one labelled LIST per kind, then a GET only
    for objects the LIST did not return (not created yet, or not labelled yet)."""

    def __init__(self, cluster: Cluster, app: str) -> None:
        self.cluster = cluster
        self.selector = f"{APP_LABEL}={app}"
        self._listed: dict[tuple[str, str], dict[tuple[str, str], Json]] = {}

    def resource(self, ref: ObjectRef) -> Resource:
        return self.cluster.resource(ref.api_version, ref.kind)

    def find(self, ref: ObjectRef) -> Json | None:
        resource = self.resource(ref)
        namespace = (ref.namespace or "") if resource.namespaced else ""
        listed = self._listing(ref, resource)
        current = listed.get((namespace, ref.name))
        if current is None:
            current = self.cluster.get(resource, ref.name, namespace or None)
        return current

    def remember(self, ref: ObjectRef, obj: Json) -> None:
        key = (ref.api_version, ref.kind)
        if key in self._listed:
            meta = obj.get("metadata") or {}
            self._listed[key][(meta.get("namespace") or "", ref.name)] = obj

    def _listing(self, ref: ObjectRef, resource: Resource) -> dict[tuple[str, str], Json]:
        key = (ref.api_version, ref.kind)
        if key not in self._listed:
            try:
                items = self.cluster.list(resource, label_selector=self.selector)
            except ClusterError as exc:
                if exc.status != 403:
                    raise
                # RBAC limited to some namespaces: read object by object instead.
                items = []
            self._listed[key] = {
                ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]): o for o in items
            }
        return self._listed[key]


class _Run:
    """The state of one apply call."""

    def __init__(self, applier: Applier, app: str, *, force_conflicts: bool, heal: bool) -> None:
        self.applier = applier
        self.cluster = applier.cluster
        self.app = app
        self.force = force_conflicts
        self.heal = heal
        self.live = _LiveView(applier.cluster, app)
        self.created: list[str] = []
        self.updated: list[str] = []
        self.unchanged: list[str] = []
        self.pruned: list[str] = []
        self.errors: list[str] = []

    def result(self) -> ApplyResult:
        return ApplyResult(
            created=self.created,
            updated=self.updated,
            unchanged=self.unchanged,
            pruned=self.pruned,
            errors=self.errors,
        )

    # -- waves -------------------------------------------------------------------

    def apply_waves(self, planned: Sequence[Planned]) -> None:
        waves = [(wave, list(items)) for wave, items in groupby(planned, key=lambda p: p.wave)]
        for index, (wave, items) in enumerate(waves):
            errors_before = len(self.errors)
            self._apply_wave(items)
            if len(self.errors) > errors_before and index + 1 < len(waves):
                skipped = sum(len(rest) for _, rest in waves[index + 1 :])
                later = ", ".join(str(w) for w, _ in waves[index + 1 :])
                self.errors.append(
                    f"wave {wave} had errors: later waves ({later}) not applied, "
                    f"{skipped} objects skipped"
                )
                return

    def _apply_wave(self, items: list[Planned]) -> None:
        crds_written: list[tuple[Planned, Json]] = []
        for position, item in enumerate(items):
            if item.rank > CRD_RANK and crds_written:
                self._establish(crds_written)
                crds_written = []
            stored = self._apply_one(item)
            if item.is_crd and stored is not None:
                crds_written.append((item, stored))
            if position + 1 == len(items) and crds_written:
                self._establish(crds_written)

    def _apply_one(self, item: Planned) -> Json | None:
        """Apply one object; returns what the server stored, None when nothing was written."""
        ref, label = item.ref, item.ref.label()
        try:
            resource = self.live.resource(ref)
            if resource.namespaced and not ref.namespace:
                self.errors.append(f"{label}: a namespaced {ref.kind} must name its namespace")
                return None
            current = self.live.find(ref)
            owner = _owner(current) if current else None
            if owner and owner != self.app:
                self.errors.append(
                    f"{label}: belongs to Sluice app {owner!r}; not taken over by {self.app!r}"
                )
                return None
            if self._unchanged(current, item):
                self.unchanged.append(label)
                return None
            stored = self.cluster.apply(
                resource, item.body, field_manager=self.applier.field_manager, force=self.force
            )
        except ClusterError as exc:
            self.errors.append(f"{label}: {scrub(str(exc), item.body)}")
            return None
        self.live.remember(ref, stored)
        (self.created if current is None else self.updated).append(label)
        return stored

    def _unchanged(self, current: Json | None, item: Planned) -> bool:
        if current is None or _owner(current) != self.app or _hash(current) != item.digest:
            return False
        return not (self.heal and drift_mod.has_drifted(current, item.body))

    def _establish(self, crds: Iterable[tuple[Planned, Json]]) -> None:
        """Wait until the CRDs just written serve their kinds, then rediscover."""
        sleep = self.cluster.retry.sleep
        for item, current in crds:
            deadline = time.monotonic() + CRD_ESTABLISH_TIMEOUT_S
            while not _established(current):
                if time.monotonic() >= deadline:
                    self.errors.append(
                        f"{item.ref.label()}: not established after "
                        f"{CRD_ESTABLISH_TIMEOUT_S:g}s; its custom resources cannot be applied"
                    )
                    break
                sleep(CRD_ESTABLISH_POLL_S)
                try:
                    found = self.cluster.get(self.live.resource(item.ref), item.ref.name, None)
                except ClusterError as exc:
                    self.errors.append(f"{item.ref.label()}: {exc}")
                    break
                current = found or {}
        try:
            self.cluster.refresh_discovery()
        except ClusterError as exc:
            self.errors.append(f"API discovery after creating CRDs failed: {exc}")

    # -- prune -------------------------------------------------------------------

    def prune(
        self, leftovers: list[ObjectRef], *, inventory_size: int, allow_mass_prune: bool
    ) -> list[ObjectRef]:
        """Delete what the inventory holds and the render lacks; returns the refs that
        must stay in the inventory (not deleted this time)."""
        if not leftovers:
            return []
        if self.errors:
            self.errors.append(
                f"prune skipped: {len(leftovers)} objects left for the next successful apply"
            )
            return leftovers
        limit = self.applier.max_prune_ratio * inventory_size
        if len(leftovers) > limit and not allow_mass_prune:
            self.errors.append(
                f"prune refused: {len(leftovers)} of {inventory_size} inventory objects would "
                f"be deleted, more than {self.applier.max_prune_ratio:.0%}; nothing pruned "
                "(set allow_mass_prune to allow it)"
            )
            return leftovers
        kept: list[ObjectRef] = []
        # Dependents first: workloads, then CRDs (their CRs go with them), then namespaces.
        for ref in sorted(leftovers, key=_prune_order):
            if not self._prune_one(ref):
                kept.append(ref)
        return kept

    def _prune_one(self, ref: ObjectRef) -> bool:
        """True when the object is gone or no longer ours (drop it from the inventory)."""
        label = ref.label()
        try:
            resource = self.live.resource(ref)
        except ClusterError as exc:
            if exc.not_found:
                return True  # its kind is gone (CRD deleted): so is the object
            self.errors.append(f"{label}: prune failed: {exc}")
            return False
        try:
            current = self.live.find(ref)
            if current is None or _owner(current) != self.app:
                return True
            uid = (current.get("metadata") or {}).get("uid")
            if self.cluster.delete(resource, ref.name, ref.namespace, uid=uid):
                self.pruned.append(label)
        except ClusterError as exc:
            self.errors.append(f"{label}: prune failed: {exc}")
            return False
        return True


# -- small helpers -----------------------------------------------------------------


def _owner(obj: Json) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(APP_LABEL)


def _hash(obj: Json) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(drift_mod.HASH_ANNOTATION)


def _established(crd: Json) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _prune_order(ref: ObjectRef) -> tuple[int, tuple[str, str, str, str]]:
    rank = kind_rank(ref.api_version, ref.kind)
    order = {NAMESPACE_RANK: 2, CRD_RANK: 1}.get(rank, 0)
    return (order, ref.identity)


def _find_or_none(live: _LiveView, ref: ObjectRef) -> Json | None:
    """The live object; None also when its kind is not served (yet)."""
    try:
        return live.find(ref)
    except ClusterError as exc:
        if exc.not_found:
            return None
        raise


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
