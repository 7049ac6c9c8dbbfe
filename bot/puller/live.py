"""Live objects as the puller reads them: one labelled LIST per kind, a GET only for the rest.

A :class:`ClusterSnapshot` lists each kind at most once over its life. A cycle shares
one snapshot (every object carrying the ``sluice.dev/app`` label) across all its apps
for drift and health; a single call makes its own (one app's objects). Also the two
labels every reader checks: which Sluice app owns an object, and the hash of what was
last applied to it.
"""

from __future__ import annotations

from typing import Any

from kubernetes.dynamic.resource import Resource

from bot.puller import drift as drift_mod
from bot.puller.cluster import Cluster, ClusterError
from bot.puller.inventory import APP_LABEL, ObjectRef

Json = dict[str, Any]
Listing = dict[tuple[str, str], Json]
# Every object some Sluice app owns (a label-exists selector).
ALL_APPS = APP_LABEL


class ClusterSnapshot:
    """Labelled objects per kind, each kind LISTed at most once; writes are remembered."""

    def __init__(self, cluster: Cluster, selector: str = ALL_APPS) -> None:
        self.cluster = cluster
        self.selector = selector
        # None: the kind could not be listed cluster-wide (RBAC limited to namespaces).
        self._listed: dict[tuple[str, str], Listing | None] = {}

    def listing(self, ref: ObjectRef, resource: Resource) -> Listing | None:
        key = (ref.api_version, ref.kind)
        if key not in self._listed:
            try:
                items = self.cluster.list(resource, label_selector=self.selector)
            except ClusterError as exc:
                if exc.status != 403:
                    raise
                # RBAC limited to some namespaces: read object by object instead.
                self._listed[key] = None
                return None
            self._listed[key] = {
                ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]): o for o in items
            }
        return self._listed[key]

    def remember(self, ref: ObjectRef, obj: Json) -> None:
        listed = self._listed.get((ref.api_version, ref.kind))
        if listed is not None:
            meta = obj.get("metadata") or {}
            listed[(meta.get("namespace") or "", ref.name)] = obj


class LiveView:
    """One app's look at live objects: from the snapshot's LIST, then a GET only for
    objects it did not return (not created yet, or not labelled yet)."""

    def __init__(self, cluster: Cluster, app: str, snapshot: ClusterSnapshot | None = None) -> None:
        self.cluster = cluster
        self.snapshot = snapshot or ClusterSnapshot(cluster, f"{APP_LABEL}={app}")

    def resource(self, ref: ObjectRef) -> Resource:
        return self.cluster.resource(ref.api_version, ref.kind)

    def find(self, ref: ObjectRef, *, listed_only: bool = False) -> Json | None:
        """The live object. ``listed_only``: trust a successful LIST of every Sluice
        object (the snapshot's selector must be :data:`ALL_APPS`): what it lacks
        carries no Sluice label, so server-side apply needs no GET first."""
        resource = self.resource(ref)
        namespace = (ref.namespace or "") if resource.namespaced else ""
        listed = self.snapshot.listing(ref, resource)
        current = listed.get((namespace, ref.name)) if listed is not None else None
        if current is None and not (listed_only and listed is not None):
            current = self.cluster.get(resource, ref.name, namespace or None)
        return current

    def remember(self, ref: ObjectRef, obj: Json) -> None:
        self.snapshot.remember(ref, obj)


def owner(obj: Json) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(APP_LABEL)


def applied_hash_of(obj: Json) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(drift_mod.HASH_ANNOTATION)


def find_or_none(live: LiveView, ref: ObjectRef) -> Json | None:
    """The live object; None also when its kind is not served (yet)."""
    try:
        return live.find(ref)
    except ClusterError as exc:
        if exc.not_found:
            return None
        raise
