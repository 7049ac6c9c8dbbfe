"""Live objects as one call sees them: one labelled LIST per kind, a GET only for the rest.

Also the two labels every reader checks: which Sluice app owns an object, and the hash
of what was last applied to it.
"""

from __future__ import annotations

from typing import Any

from kubernetes.dynamic.resource import Resource

from bot.puller import drift as drift_mod
from bot.puller.cluster import Cluster, ClusterError
from bot.puller.inventory import APP_LABEL, ObjectRef

Json = dict[str, Any]


class LiveView:
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
