"""Per-app inventory: which objects the puller applied for an app, kept in the cluster.

The inventory is what pruning trusts. It lives in a ConfigMap
``sluice-inventory-<app>`` (namespace ``sluice-system`` by default) as a JSON list of
``{apiVersion, kind, namespace, name}``, so it survives restarts of the puller and
belongs to the cluster it describes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from kubernetes.client import ApiClient

from bot.diff.normalize import api_group
from bot.puller.cluster import Cluster, ClusterError

DEFAULT_NAMESPACE = "sluice-system"
CONFIGMAP_PREFIX = "sluice-inventory-"
DATA_KEY = "inventory.json"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP_LABEL = "sluice.dev/app"
MANAGED_BY = "sluice"


class InventoryError(Exception):
    """The stored inventory cannot be read or written."""


class ObjectRef(NamedTuple):
    """One object the puller applied."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """Group, kind, namespace, name: an apiVersion bump within a group keeps it."""
        return (api_group(self.api_version), self.kind, self.namespace or "", self.name)

    def label(self) -> str:
        """``Kind namespace/name`` (``Kind name`` when cluster-scoped)."""
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ObjectRef:
        if not isinstance(data, dict):
            raise ValueError(f"inventory entry is a {type(data).__name__}, not a mapping")
        fields = [data.get(k) for k in ("apiVersion", "kind", "name")]
        if not all(isinstance(v, str) and v for v in fields):
            raise ValueError(f"inventory entry lacks apiVersion, kind or name: {data!r}")
        namespace = data.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise ValueError(f"inventory entry has a non-string namespace: {data!r}")
        return cls(fields[0], fields[1], namespace or None, fields[2])

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion") or ""),
            str(obj.get("kind") or ""),
            meta.get("namespace") or None,
            str(meta.get("name") or ""),
        )


def configmap_name(app: str) -> str:
    return f"{CONFIGMAP_PREFIX}{app}"


class InventoryStore:
    """Load and save an app's inventory in a ConfigMap.

    ``save`` writes only when the content changes, so a cycle that changes nothing
    makes no write; a missing namespace is created on the first save."""

    def __init__(
        self,
        client: ApiClient | Cluster,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        field_manager: str = "sluice",
        discovery_cache: Path | None = None,
    ) -> None:
        self.cluster = (
            client
            if isinstance(client, Cluster)
            else Cluster(client, discovery_cache=discovery_cache)
        )
        self.namespace = namespace
        self.field_manager = field_manager
        # What this store last read or wrote per app: lets save() skip a no-op write
        # without reading the ConfigMap again.
        self._known: dict[str, frozenset[ObjectRef]] = {}

    def load(self, app: str) -> set[ObjectRef]:
        try:
            configmap = self.cluster.get(
                self.cluster.resource("v1", "ConfigMap"), configmap_name(app), self.namespace
            )
        except ClusterError as exc:
            raise InventoryError(f"cannot read the inventory of app {app}: {exc}") from None
        refs = self._parse(app, configmap)
        self._known[app] = frozenset(refs)
        return set(refs)

    def save(self, app: str, refs: Iterable[ObjectRef]) -> None:
        wanted = frozenset(refs)
        if self._known.get(app) == wanted:
            return
        body = self._configmap(app, wanted)
        try:
            self._apply(body)
        except ClusterError as exc:
            if not exc.not_found:
                raise InventoryError(f"cannot write the inventory of app {app}: {exc}") from None
            self._create_namespace(app)
            try:
                self._apply(body)
            except ClusterError as again:
                raise InventoryError(f"cannot write the inventory of app {app}: {again}") from None
        self._known[app] = wanted

    def _parse(self, app: str, configmap: dict[str, Any] | None) -> set[ObjectRef]:
        if configmap is None:
            return set()
        text = (configmap.get("data") or {}).get(DATA_KEY)
        if text is None:
            return set()
        try:
            entries = json.loads(text)
            if not isinstance(entries, list):
                raise ValueError("not a JSON list")
            return {ObjectRef.from_dict(entry) for entry in entries}
        except ValueError as exc:
            # Fail closed: with an unreadable inventory nothing may be pruned.
            raise InventoryError(
                f"inventory ConfigMap {self.namespace}/{configmap_name(app)} is corrupt: {exc}"
            ) from None

    def _configmap(self, app: str, refs: frozenset[ObjectRef]) -> dict[str, Any]:
        entries = [ref.to_dict() for ref in sorted(refs, key=_sort_key)]
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap_name(app),
                "namespace": self.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, "sluice.dev/inventory-of": app},
            },
            "data": {DATA_KEY: json.dumps(entries, separators=(",", ":"))},
        }

    def _apply(self, body: dict[str, Any]) -> None:
        self.cluster.apply(
            self.cluster.resource("v1", "ConfigMap"),
            body,
            field_manager=self.field_manager,
            force=True,
        )

    def _create_namespace(self, app: str) -> None:
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        }
        try:
            self.cluster.apply(
                self.cluster.resource("v1", "Namespace"),
                namespace,
                field_manager=self.field_manager,
                force=True,
            )
        except ClusterError as exc:
            raise InventoryError(
                f"cannot create namespace {self.namespace} for the inventory of app {app}: {exc}"
            ) from None


def _sort_key(ref: ObjectRef) -> tuple[str, str, str, str, str]:
    return (*ref.identity, ref.api_version)
