"""Converge the cluster to an app's rendered objects: server-side apply in waves, then prune.

Rules (what Argo CD and Flux do, and what users complain they do not):

* Every object is applied with server-side apply under field manager ``sluice``, in
  waves (see :mod:`bot.puller.plan`); after a wave's CustomResourceDefinitions the
  puller waits for them to be established and refreshes discovery, so custom
  resources in the same apply resolve. A wave with an error stops the later waves
  (like Argo CD's sync waves): they may depend on it. Objects in the same wave still go.
* No write for an unchanged object: each applied object carries
  ``sluice.dev/applied-hash`` (sha256 of the desired object). Live objects are read with
  one LIST per kind of every object with a ``sluice.dev/app`` label (so one another app
  owns is seen too); an object that LIST lacks is applied with no GET first. An object
  whose live hash matches is left alone, so a cycle that changes nothing makes no write. ``heal=True`` re-applies objects
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from bot.puller import drift as drift_mod
from bot.puller.cluster import Cluster, ClusterError, RetryPolicy
from bot.puller.inventory import InventoryError, InventoryStore, ObjectRef
from bot.puller.live import ClusterSnapshot, LiveView, applied_hash_of, owner
from bot.puller.plan import CRD_RANK, NAMESPACE_RANK, PlanError, Planned, kind_rank, plan
from bot.puller.secrets_scrub import scrub
from bot.puller.views import ClusterViews

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


class Applier(ClusterViews):
    """Apply and prune one app's objects; diff, drift and health come from
    :class:`~bot.puller.views.ClusterViews`."""

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
        cluster = Cluster(api_client, discovery_cache=discovery_cache, retry=retry)
        store = store or InventoryStore(cluster, field_manager=field_manager)
        super().__init__(cluster, store, field_manager=field_manager)
        self.max_prune_ratio = max_prune_ratio

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


class _Run:
    """The state of one apply call."""

    def __init__(self, applier: Applier, app: str, *, force_conflicts: bool, heal: bool) -> None:
        self.applier = applier
        self.cluster = applier.cluster
        self.app = app
        self.force = force_conflicts
        self.heal = heal
        # Every Sluice object, so one owned by another app is seen without a GET.
        self.live = LiveView(applier.cluster, app, ClusterSnapshot(applier.cluster))
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
            current = self.live.find(ref, listed_only=True)
            holder = owner(current) if current else None
            if holder and holder != self.app:
                self.errors.append(
                    f"{label}: belongs to Sluice app {holder!r}; not taken over by {self.app!r}"
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
        if current is None or owner(current) != self.app or applied_hash_of(current) != item.digest:
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
            current = self.live.find(ref, listed_only=True)
            if current is None or owner(current) != self.app:
                return True
            uid = (current.get("metadata") or {}).get("uid")
            if self.cluster.delete(resource, ref.name, ref.namespace, uid=uid):
                self.pruned.append(label)
        except ClusterError as exc:
            self.errors.append(f"{label}: prune failed: {exc}")
            return False
        return True


# -- small helpers -----------------------------------------------------------------


def _established(crd: Json) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _prune_order(ref: ObjectRef) -> tuple[int, tuple[str, str, str, str]]:
    rank = kind_rank(ref.api_version, ref.kind)
    order = {NAMESPACE_RANK: 2, CRD_RANK: 1}.get(rank, 0)
    return (order, ref.identity)
