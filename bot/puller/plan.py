"""From rendered objects to an apply plan: validated, labelled, hashed and ordered.

Order: ascending wave, an integer annotation, default 0: ``sluice.dev/wave``, else Argo
CD's ``argocd.argoproj.io/sync-wave`` (so a repo written for Argo CD keeps its order;
when both are set, ``sluice.dev/wave`` wins). Within a wave Namespaces, then
CustomResourceDefinitions, then the other kinds in Helm's install order (kinds Helm does
not know, such as custom resources, last); ties keep the render's order.

A Namespace the app itself creates is applied before any object in it, whatever the
waves say: it moves to the earliest wave of the objects it holds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.diff import is_namespaced, normalize
from bot.puller.drift import HASH_ANNOTATION
from bot.puller.inventory import (
    APP_LABEL,
    CONFIGMAP_PREFIX,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ObjectRef,
)

WAVE_ANNOTATION = "sluice.dev/wave"
ARGOCD_WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
WAVE_ANNOTATIONS = (WAVE_ANNOTATION, ARGOCD_WAVE_ANNOTATION)  # the first one set wins
Json = dict[str, Any]

NAMESPACE_RANK = 0
CRD_RANK = 1
# Helm's install order (pkg/release/util/kind_sorter.go), after the two above.
_INSTALL_ORDER = (
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
_KIND_RANK = {kind: CRD_RANK + 1 + index for index, kind in enumerate(_INSTALL_ORDER)}
_UNKNOWN_KIND_RANK = CRD_RANK + 1 + len(_INSTALL_ORDER)

# An app name must work as a label value and inside a ConfigMap name.
_APP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
_WAVE = re.compile(r"^[-+]?\d{1,9}$")


class PlanError(ValueError):
    """The objects cannot be applied as given; nothing was sent to the cluster."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Planned:
    """One object ready to apply."""

    ref: ObjectRef
    body: Json  # what is sent: managed labels and the applied-hash annotation set
    digest: str
    wave: int
    rank: int
    position: int

    @property
    def is_crd(self) -> bool:
        return self.rank == CRD_RANK

    def sort_key(self) -> tuple[int, int, int]:
        return (self.wave, self.rank, self.position)


def plan(app: str, objects: Sequence[Any]) -> list[Planned]:
    """Validate and prepare ``objects`` for ``app``, sorted in apply order.

    Raises :class:`PlanError` listing every problem found."""
    problems: list[str] = []
    if not _APP_NAME.match(app or ""):
        raise PlanError(
            [
                f"app name {app!r} cannot be used as a label value and in the ConfigMap "
                f"name {CONFIGMAP_PREFIX}<app>: use lowercase letters, digits, '-' and '.'"
            ]
        )
    planned: list[Planned] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for position, obj in enumerate(objects):
        item = _plan_one(app, obj, position, problems)
        if item is None:
            continue
        first = seen.setdefault(item.ref.identity, position)
        if first != position:
            problems.append(f"{item.ref.label()}: appears twice (objects #{first} and #{position})")
            continue
        planned.append(item)
    if problems:
        raise PlanError(problems)
    return sorted(_namespaces_first(planned), key=Planned.sort_key)


def _namespaces_first(planned: list[Planned]) -> list[Planned]:
    """Move each Namespace the app creates to the earliest wave of the objects in it."""
    earliest: dict[str, int] = {}
    for item in planned:
        if item.ref.namespace is not None:
            wave = earliest.get(item.ref.namespace)
            earliest[item.ref.namespace] = item.wave if wave is None else min(wave, item.wave)
    return [
        replace(item, wave=earliest[item.ref.name])
        if item.rank == NAMESPACE_RANK and earliest.get(item.ref.name, item.wave) < item.wave
        else item
        for item in planned
    ]


def _plan_one(app: str, obj: Any, position: int, problems: list[str]) -> Planned | None:
    if not isinstance(obj, dict):
        problems.append(f"object #{position} is a {type(obj).__name__}, not a mapping")
        return None
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not all(isinstance(v, str) and v for v in (api_version, kind, name)):
        problems.append(f"object #{position} lacks apiVersion, kind or metadata.name")
        return None
    body = normalize(obj, None)
    metadata = body["metadata"]
    if not is_namespaced(kind):
        metadata.pop("namespace", None)
    namespace = metadata.get("namespace") or None
    if namespace is not None and not isinstance(namespace, str):
        problems.append(f"object #{position} ({kind} {name}) has a non-string namespace")
        return None
    ref = ObjectRef(api_version, kind, namespace, name)
    wave = _wave(metadata.get("annotations"), ref, problems)
    if wave is None:
        return None
    labels = metadata.get("labels")
    if labels is not None and not isinstance(labels, dict):
        problems.append(f"{ref.label()}: metadata.labels is not a mapping")
        return None
    labels = dict(labels or {})
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    labels[APP_LABEL] = app
    metadata["labels"] = dict(sorted(labels.items()))
    annotations = dict(metadata.get("annotations") or {})
    annotations.pop(HASH_ANNOTATION, None)
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    digest = applied_hash(body)
    metadata["annotations"] = dict(sorted({**annotations, HASH_ANNOTATION: digest}.items()))
    return Planned(
        ref=ref,
        body=copy.deepcopy(body),
        digest=digest,
        wave=wave,
        rank=kind_rank(api_version, kind),
        position=position,
    )


def _wave(annotations: Any, ref: ObjectRef, problems: list[str]) -> int | None:
    if annotations is not None and not isinstance(annotations, dict):
        problems.append(f"{ref.label()}: metadata.annotations is not a mapping")
        return None
    for name in WAVE_ANNOTATIONS:
        raw = (annotations or {}).get(name)
        if raw is None:
            continue
        text = str(raw).strip()
        if not _WAVE.match(text):
            problems.append(f"{ref.label()}: annotation {name}={raw!r} is not an integer")
            return None
        return int(text)
    return 0


def kind_rank(api_version: str, kind: str) -> int:
    if kind == "Namespace" and api_version == "v1":
        return NAMESPACE_RANK
    if kind == "CustomResourceDefinition" and api_version.startswith("apiextensions.k8s.io/"):
        return CRD_RANK
    return _KIND_RANK.get(kind, _UNKNOWN_KIND_RANK)


def applied_hash(body: Json) -> str:
    """sha256 over the canonical JSON of the desired object (without the hash annotation)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
