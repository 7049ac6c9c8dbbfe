"""Normalization: strip what the cluster owns, fill in the namespace, fix key order."""

from __future__ import annotations

from typing import Any, NamedTuple

from bot.models import K8sObject

# Kinds that never live in a namespace. Matched by kind alone: a CRD kind that is
# not listed counts as namespaced, which is Kubernetes' own default for CRDs.
CLUSTER_SCOPED_KINDS: frozenset[str] = frozenset(
    {
        # core
        "Namespace",
        "Node",
        "PersistentVolume",
        "ComponentStatus",
        # storage
        "StorageClass",
        "CSIDriver",
        "CSINode",
        "VolumeAttachment",
        # rbac
        "ClusterRole",
        "ClusterRoleBinding",
        # apiextensions / apiregistration
        "CustomResourceDefinition",
        "APIService",
        # scheduling, node, networking, policy
        "PriorityClass",
        "RuntimeClass",
        "IngressClass",
        "PodSecurityPolicy",
        "FlowSchema",
        "PriorityLevelConfiguration",
        # admission
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        # certificates
        "CertificateSigningRequest",
        "ClusterTrustBundle",
        # well-known CRDs
        "ClusterIssuer",  # cert-manager
        "ClusterSecretStore",  # external-secrets
        "ClusterExternalSecret",
        "ClusterPolicy",  # kyverno
        "ClusterPolicyReport",
        "ClusterServiceVersion",
        "ClusterTriggerBinding",  # tekton
        "ClusterTask",
        "GatewayClass",  # gateway-api
    }
)

# Fields the API server writes; they are never part of desired state.
_DROPPED_TOP_LEVEL = ("status",)
_DROPPED_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
)


class ObjectKey(NamedTuple):
    """Identity of an object across revisions: an apiVersion bump keeps the key."""

    group: str
    kind: str
    namespace: str | None
    name: str

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace or "", self.name)

    def label(self) -> str:
        """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped)."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


def api_group(api_version: str) -> str:
    """``"apps/v1"`` → ``"apps"``; ``"v1"`` (the core group) → ``""``."""
    group, sep, _version = api_version.rpartition("/")
    return group if sep else ""


def is_namespaced(kind: str, cluster_scoped_kinds: frozenset[str] = CLUSTER_SCOPED_KINDS) -> bool:
    return kind not in cluster_scoped_kinds


def object_key(obj: K8sObject) -> ObjectKey:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return ObjectKey(
        group=api_group(str(obj.get("apiVersion") or "")),
        kind=str(obj.get("kind") or ""),
        namespace=metadata.get("namespace") or None,
        name=str(metadata.get("name") or ""),
    )


def normalize(
    obj: K8sObject,
    default_namespace: str | None,
    *,
    cluster_scoped_kinds: frozenset[str] = CLUSTER_SCOPED_KINDS,
) -> K8sObject:
    """A copy of ``obj`` as desired state: server-owned fields dropped, the default
    namespace applied to namespaced objects that name none, keys sorted at every level.
    ``obj`` itself is left untouched."""
    out = {k: v for k, v in obj.items() if k not in _DROPPED_TOP_LEVEL}
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if k not in _DROPPED_METADATA}
    elif metadata is None:
        metadata = {}
    if (
        isinstance(metadata, dict)
        and default_namespace
        and not metadata.get("namespace")
        and is_namespaced(str(out.get("kind") or ""), cluster_scoped_kinds)
    ):
        metadata["namespace"] = default_namespace
    if metadata or "metadata" in out:
        out["metadata"] = metadata
    return sorted_copy(out)


def sorted_copy(value: Any) -> Any:
    """A deep copy with every mapping's keys in sorted order."""
    if isinstance(value, dict):
        return {k: sorted_copy(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [sorted_copy(v) for v in value]
    return value
