"""An emulator of the Kubernetes API server calls a GitOps puller makes, over real HTTP.

It serves 127.0.0.1 with keep-alive and ``TCP_NODELAY`` and follows the published API
(https://kubernetes.io/docs/reference/using-api/api-concepts/) for what the official
``kubernetes`` Python client (typed APIs and ``DynamicClient``) sends:

* discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/{g}``, ``/apis/{g}/{v}``;
  CustomResourceDefinitions register their group/version/kind/plural when created and
  disappear (with their objects) when deleted;
* get, list (``labelSelector`` with ``=`` ``==`` ``!=`` ``in`` ``notin`` ``key`` ``!key``;
  ``fieldSelector`` on ``metadata.name``/``metadata.namespace``; ``limit``/``continue``; across
  all namespaces), create, replace (``resourceVersion`` and ``uid`` preconditions), delete
  (``propagationPolicy``; owner-reference cascade unless ``Orphan``; delete preconditions),
  deletecollection;
* patch: JSON merge patch, JSON patch, strategic merge patch (treated as a JSON merge patch:
  lists are replaced, ``$patch`` directives are not understood), and server-side apply
  (``application/apply-patch+yaml``; ``fieldManager`` required, ``force``), with managedFields
  tracked per manager and operation (Apply/Update) at leaf granularity: every list is atomic
  (owned and replaced as a whole, like ``x-kubernetes-list-type: atomic``);
* ``dryRun=All`` on every write: validated and answered, nothing stored, nothing counted as a
  state change (the request is recorded as a dry run);
* a global ``resourceVersion`` counter bumped by every write that changes something (a no-op
  update or apply changes nothing, as on a real server), ``uid``, ``creationTimestamp``,
  ``generation`` (bumped when anything outside metadata/status changes);
* the ``status`` subresource: its writes change only ``.status``; writes to the main resource
  leave ``.status`` alone (and create drops it) for every type that has one;
* namespaces must exist for namespaced writes; deleting a namespace deletes its objects at
  once (no Terminating phase); ``default`` and ``kube-*`` namespaces cannot be deleted;
* bearer-token authentication (401), and tokens restricted to reads and/or namespaces (403);
* errors as ``Status`` objects with the real reasons and messages.

Timestamps of built-in types are stored in RFC 3339 ``Z`` form; the typed client sends
``+00:00`` and the real server normalises, so does this one.

Not emulated (gaps): watch, defaulting (no ``spec.strategy`` etc. appears), OpenAPI schema
validation and pruning of custom resources, CRD version conversion (objects are served in
whichever version is asked), finalizers and graceful deletion, admission, aggregated
discovery (the client asks for the plain kind), protobuf, strategic-merge list semantics.
Kubernetes' own checks are reproduced only for names, labels and CRD names.

Tests drive the HTTP side only through the official client and use the Python side to seed
state, read it back, count calls (``calls``/``write_calls``, per kind ``calls_by_kind``; a
request answered by an injected fault never reached the API and is recorded with verb None)
and inject faults.
Remember the client's own retries: urllib3 repeats GET/PUT/DELETE answered 429/503 with
``Retry-After`` (4 tries in all) and dropped idempotent requests; PATCH/POST and 500s are
never retried, so fault tests aim there.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import kubernetes.client
import yaml

from tests.emulators.faults import FaultSchedule

GIT_VERSION = "v1.31.4"
Path = tuple[str, ...]
Json = dict[str, Any]

READ_VERBS = frozenset({"get", "list"})
WRITE_VERBS = frozenset({"create", "update", "patch", "apply", "delete", "deletecollection"})
RESOURCE_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Set by the server, never taken from a client's body, and never owned by a field manager.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
)
MICRO_TIME_KEYS = frozenset({"eventTime", "renewTime", "acquireTime"})

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SELECTOR_TERM = re.compile(
    r"^(?P<neg>!)?(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)"
    r"(?:(?P<op>==|=|!=)(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?$"
)
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------
# Resource types


@dataclass(frozen=True)
class ResourceType:
    """One served resource: what discovery lists and what its URLs name."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    tracks_generation: bool = False
    custom: bool = False  # defined by a CRD: list items carry kind/apiVersion, times untouched

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def resource(self) -> str:
        """The name used in messages: ``configmaps`` or ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[Json]:
        entry: Json = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(RESOURCE_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def _builtin(
    group: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    generation: bool = False,
    version: str = "v1",
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        namespaced=namespaced,
        short_names=short,
        status_subresource=status,
        tracks_generation=generation,
    )


BUILTIN_TYPES = (
    _builtin("", "Namespace", "namespaces", namespaced=False, short=("ns",), status=True),
    _builtin("", "ConfigMap", "configmaps", short=("cm",)),
    _builtin("", "Secret", "secrets"),
    _builtin("", "Service", "services", short=("svc",), status=True),
    _builtin("", "ServiceAccount", "serviceaccounts", short=("sa",)),
    _builtin("", "Pod", "pods", short=("po",), status=True),
    _builtin("", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), status=True),
    _builtin("", "Event", "events", short=("ev",)),
    _builtin("apps", "Deployment", "deployments", short=("deploy",), status=True, generation=True),
    _builtin("apps", "StatefulSet", "statefulsets", short=("sts",), status=True, generation=True),
    _builtin("apps", "DaemonSet", "daemonsets", short=("ds",), status=True, generation=True),
    _builtin("apps", "ReplicaSet", "replicasets", short=("rs",), status=True, generation=True),
    _builtin("batch", "Job", "jobs", status=True, generation=True),
    _builtin("batch", "CronJob", "cronjobs", short=("cj",), status=True, generation=True),
    _builtin("networking.k8s.io", "Ingress", "ingresses", short=("ing",), status=True),
    _builtin("networking.k8s.io", "NetworkPolicy", "networkpolicies", short=("netpol",)),
    _builtin("rbac.authorization.k8s.io", "Role", "roles"),
    _builtin("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
    _builtin("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", namespaced=False),
    _builtin(
        "rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings", namespaced=False
    ),
    _builtin("policy", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",), status=True),
    _builtin("coordination.k8s.io", "Lease", "leases"),
    _builtin(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short=("crd", "crds"),
        status=True,
        generation=True,
    ),
)
CRD_GROUP = "apiextensions.k8s.io"


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version order: GA before beta before alpha, higher numbers first."""
    match = _VERSION.match(version)
    if match is None:
        return (3, 0, 0)
    stage = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    return (stage, -int(match.group(1)), -int(match.group(3) or 0))


# ---------------------------------------------------------------------------
# Faults and records


@dataclass(frozen=True)
class Fault:
    """One injected failure. Build with the class methods."""

    kind: Literal["error", "drop", "stall"]
    status: int = 500
    retry_after: int | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, status: int = 500, *, retry_after: int | None = None) -> Fault:
        """A Status error answer: 500 InternalError, 503 ServiceUnavailable,
        429 TooManyRequests (with ``Retry-After`` when ``retry_after`` is set)."""
        return cls("error", status=status, retry_after=retry_after)

    @classmethod
    def throttle(cls, retry_after: int = 1) -> Fault:
        """429 Too Many Requests with ``Retry-After`` (API priority and fairness)."""
        return cls("error", status=429, retry_after=retry_after)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Answer nothing for ``seconds`` (a client timeout), then close the connection."""
        return cls("stall", seconds=seconds)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    verb: str | None  # get/list/create/update/patch/apply/delete/deletecollection; None: other
    dry_run: bool
    status: int | None  # None when the connection was dropped or stalled
    user: str | None
    kind: str | None = None  # the resource's kind, once the request was routed
    at: float = field(default_factory=time.monotonic)  # when it was answered


@dataclass(frozen=True)
class _Token:
    user: str
    read_only: bool = False
    namespaces: frozenset[str] | None = None  # None: every namespace and the cluster scope


@dataclass(frozen=True)
class _Manager:
    """One metadata.managedFields entry, its fields as leaf paths from the object root."""

    manager: str
    operation: Literal["Apply", "Update"]
    api_version: str
    subresource: str
    time: str
    fields: frozenset[Path]

    def same_owner(self, manager: str, operation: str, subresource: str) -> bool:
        return (self.manager, self.operation, self.subresource) == (
            manager,
            operation,
            subresource,
        )

    def render(self) -> Json:
        entry: Json = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": _fields_tree(self.fields),
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


@dataclass
class _Stored:
    obj: Json  # as served, metadata.managedFields rendered from ``managers``
    managers: list[_Manager] = field(default_factory=list)


class KubeError(Exception):
    """An answer in the form of a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Json | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> Json:
        body: Json = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rtype: ResourceType, name: str | None, **extra: Any) -> Json:
    details: Json = {"kind": rtype.plural}
    if name:
        details["name"] = name
    if rtype.group:
        details["group"] = rtype.group
    details.update(extra)
    return details


def _not_found(rtype: ResourceType, name: str) -> KubeError:
    return KubeError(404, "NotFound", f'{rtype.resource} "{name}" not found', _details(rtype, name))


def _namespace_not_found(namespace: str) -> KubeError:
    return KubeError(
        404,
        "NotFound",
        f'namespaces "{namespace}" not found',
        {"name": namespace, "kind": "namespaces"},
    )


def _no_route() -> KubeError:
    return KubeError(404, "NotFound", "the server could not find the requested resource", {})


def _bad_request(message: str) -> KubeError:
    return KubeError(400, "BadRequest", message)


def _conflict(rtype: ResourceType, name: str, why: str, **extra: Any) -> KubeError:
    return KubeError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rtype.resource} "{name}": {why}',
        _details(rtype, name, **extra),
    )


def _stale(rtype: ResourceType, name: str) -> KubeError:
    return _conflict(
        rtype,
        name,
        "the object has been modified; please apply your changes to the latest version "
        "and try again",
    )


def _invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> KubeError:
    """422 Invalid; ``causes`` are (field, reason, message) like field.ErrorList."""
    text = ", ".join(f"{where}: {message}" for where, _, message in causes)
    details: Json = {
        "name": name,
        "kind": kind,
        "causes": [
            {"reason": reason, "message": message, "field": where}
            for where, reason, message in causes
        ],
    }
    if group:
        details["group"] = group
    return KubeError(
        422, "Invalid", f'{kind}{"." + group if group else ""} "{name}" is invalid: {text}', details
    )


# ---------------------------------------------------------------------------
# Field paths (server-side apply bookkeeping)


def _leaves(value: Any, prefix: Path = ()) -> set[Path]:
    """Every leaf path: scalars, lists (atomic) and empty maps."""
    if isinstance(value, dict) and value:
        found: set[Path] = set()
        for key, child in value.items():
            found |= _leaves(child, (*prefix, key))
        return found
    return {prefix} if prefix else set()


_MISSING = object()


def _lookup(obj: Any, path: Path) -> Any:
    node = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _overlaps(a: Path, b: Path) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def _overlaps_any(path: Path, paths: set[Path] | frozenset[Path]) -> bool:
    return any(_overlaps(path, other) for other in paths)


def _delete_path(obj: Json, path: Path) -> None:
    """Remove ``path`` and the maps it leaves empty (never the root's ``metadata``)."""
    trail: list[tuple[Json, str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        trail.append((node, key))
        node = node[key]
    if not isinstance(node, dict):
        return
    node.pop(path[-1], None)
    for parent, key in reversed(trail):
        if parent[key] != {} or (parent is obj and key == "metadata"):
            return
        del parent[key]


def _fields_tree(paths: frozenset[Path]) -> Json:
    tree: Json = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def _parse_fields_tree(tree: Json, prefix: Path = ()) -> set[Path]:
    """FieldsV1 → leaf paths; keyed list items (``k:``/``v:``/``i:``) own their whole list."""
    found: set[Path] = set()
    for key, child in tree.items():
        if key.startswith("f:"):
            path = (*prefix, key[2:])
            found |= _parse_fields_tree(child, path) if child else {path}
        elif key != "." and prefix:
            found.add(prefix)
    return found


def _field_string(path: Path) -> str:
    return "".join(f".{key}" for key in path)


def _fields_view(obj: Json) -> Json:
    """The object as field managers see it: no apiVersion/kind, no server metadata."""
    view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_METADATA}
    meta.pop("name", None)
    meta.pop("namespace", None)
    if meta:
        view["metadata"] = meta
    else:
        view.pop("metadata", None)
    return view


def _owned_part(rtype: ResourceType, view: Json, subresource: str) -> Json:
    """The part of a fields view that a write through this endpoint may own."""
    if subresource == "status":
        return {"status": view["status"]} if "status" in view else {}
    if rtype.status_subresource:
        return {k: v for k, v in view.items() if k != "status"}
    return view


def _deep_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _deep_merge(base.get(key), value)
        return merged
    return copy.deepcopy(patch)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# Patches


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # strategic-merge directives; see the module docstring
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"invalid JSON pointer {pointer!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _json_patch(document: Json, operations: Any) -> Json:
    """RFC 6902 JSON patch; raises ValueError when an operation cannot be applied."""
    if not isinstance(operations, list):
        raise ValueError("a JSON patch must be a list of operations")
    doc: Any = copy.deepcopy(document)

    def parent(parts: list[str]) -> tuple[Any, str]:
        if not parts:
            raise ValueError("cannot address the document root")
        node = doc
        for part in parts[:-1]:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ValueError(f"path not found: /{'/'.join(parts)}")
        return node, parts[-1]

    def get(parts: list[str]) -> Any:
        node, key = parent(parts)
        if isinstance(node, dict) and key in node:
            return node[key]
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            return node[int(key)]
        raise ValueError(f"path not found: /{'/'.join(parts)}")

    def remove(parts: list[str]) -> Any:
        value = get(parts)
        node, key = parent(parts)
        if isinstance(node, dict):
            del node[key]
        else:
            del node[int(key)]
        return value

    def add(parts: list[str], value: Any) -> None:
        node, key = parent(parts)
        if isinstance(node, dict):
            node[key] = value
        elif isinstance(node, list) and key == "-":
            node.append(value)
        elif isinstance(node, list) and key.isdigit() and int(key) <= len(node):
            node.insert(int(key), value)
        else:
            raise ValueError(f"cannot add at /{'/'.join(parts)}")

    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise ValueError("each JSON patch operation needs 'op' and 'path'")
        op, parts = operation["op"], _pointer(operation["path"])
        if op == "add":
            add(parts, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            remove(parts)
        elif op == "replace":
            get(parts)
            node, key = parent(parts)
            node[int(key) if isinstance(node, list) else key] = copy.deepcopy(
                operation.get("value")
            )
        elif op == "move":
            add(parts, remove(_pointer(operation["from"])))
        elif op == "copy":
            add(parts, copy.deepcopy(get(_pointer(operation["from"]))))
        elif op == "test":
            if get(parts) != operation.get("value"):
                raise ValueError(f"test operation failed at {operation['path']}")
        else:
            raise ValueError(f"unknown JSON patch operation {op!r}")
    if not isinstance(doc, dict):
        raise ValueError("the patched document is not an object")
    return doc


# ---------------------------------------------------------------------------
# Selectors


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, []
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    terms.append("".join(current).strip())
    return [term for term in terms if term]


def _label_matcher(selector: str) -> Any:
    requirements = []
    for term in _split_terms(selector):
        match = _SELECTOR_TERM.match(re.sub(r"\s*(==|!=|=)\s*", r"\1", term))
        if match is None or (match["neg"] and (match["op"] or match["setop"])):
            raise _bad_request(f"unable to parse requirement: {term!r}")
        key = match["key"]
        if match["neg"]:
            requirements.append((key, "!", set()))
        elif match["op"]:
            requirements.append((key, "!=" if match["op"] == "!=" else "=", {match["value"]}))
        elif match["setop"]:
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            requirements.append((key, match["setop"], values))
        else:
            requirements.append((key, "exists", set()))

    def matches(labels: dict[str, str]) -> bool:
        for key, op, values in requirements:
            present = key in labels
            if op == "exists" and not present:
                return False
            if op == "!" and present:
                return False
            if op in ("=", "in") and (not present or labels[key] not in values):
                return False
            if op in ("!=", "notin") and present and labels[key] in values:
                return False
        return True

    return matches


def _field_matcher(selector: str) -> Any:
    requirements = []
    for term in _split_terms(selector):
        match = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", term)
        if match is None:
            raise _bad_request(f"invalid selector: {term!r}")
        key, op, value = match.groups()
        if key not in ("metadata.name", "metadata.namespace"):
            raise _bad_request(f"field label not supported: {key}")
        requirements.append((key.split(".")[1], op == "!=", value))

    def matches(meta: Json) -> bool:
        return all((meta.get(key, "") == value) != negate for key, negate, value in requirements)

    return matches


# ---------------------------------------------------------------------------
# Timestamps


def _normalise_times(value: Any, key: str = "") -> Any:
    """Re-render metav1.Time / MicroTime values the way the API server stores them."""
    if isinstance(value, dict):
        return {k: _normalise_times(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise_times(v, key) for v in value]
    if isinstance(value, str) and (key.endswith(("Time", "Timestamp")) or key == "time"):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is None:
            return value
        moment = moment.astimezone(UTC)
        pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if key in MICRO_TIME_KEYS else "%Y-%m-%dT%H:%M:%SZ"
        return moment.strftime(pattern)
    return value


# ---------------------------------------------------------------------------
# Requests


@dataclass
class _Target:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str  # "" or "status"


@dataclass
class _Call:
    method: str
    path: str
    query: dict[str, str]
    raw: bytes
    content_type: str
    user_agent: str
    token: _Token | None = None
    verb: str | None = None  # set once routed; recorded even when the request fails
    kind: str | None = None  # likewise

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"

    def json_body(self) -> Any:
        if not self.raw:
            return None
        try:
            return json.loads(self.raw)
        except ValueError as exc:
            raise _bad_request(f"the body of the request was in an unknown format: {exc}") from exc

    def object_body(self) -> Json:
        body = self.json_body()
        if not isinstance(body, dict):
            raise _bad_request("the body of the request must be a JSON object")
        return body

    def field_manager(self, *, required: bool = False) -> str:
        manager = self.query.get("fieldManager", "")
        if len(manager) > 128:
            raise _invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [("fieldManager", "FieldValueTooLong", "Too long: may not be more than 128 bytes")],
            )
        if manager:
            return manager
        if required:
            raise _invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [
                    (
                        "fieldManager",
                        "FieldValueRequired",
                        "Required value: is required for apply patch",
                    )
                ],
            )
        return self.user_agent.split("/", 1)[0] or "unknown"

    def force(self) -> bool:
        return self.query.get("force", "").lower() in ("true", "1")


# ---------------------------------------------------------------------------
# The emulator


class KubeEmulator:
    """A Kubernetes API server on 127.0.0.1. Use as a context manager or start()/stop()."""

    def __init__(
        self, *, token: str | None = None, user: str = "system:serviceaccount:sluice:puller"
    ) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.latency_s = 0.0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._tokens: dict[str, _Token] = {self.token: _Token(user)}
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._store: dict[tuple[str, str], dict[tuple[str, str], _Stored]] = {}
        self._rv = 1000
        self._faults = FaultSchedule()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for rtype in BUILTIN_TYPES:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        for namespace in sorted(PROTECTED_NAMESPACES):
            self.add_namespace(namespace)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> KubeEmulator:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        # A short poll interval keeps stop() (and so every test teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """The server URL to give the client (``Configuration.host``)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def api_client(self, token: str | None = None) -> kubernetes.client.ApiClient:
        """An official-client ApiClient for this server, authenticated with ``token``."""
        configuration = kubernetes.client.Configuration(
            host=self.host, api_key={"authorization": f"Bearer {token or self.token}"}
        )
        return kubernetes.client.ApiClient(configuration)

    # -- credentials ---------------------------------------------------------

    def add_token(
        self,
        token: str,
        *,
        user: str,
        read_only: bool = False,
        namespaces: list[str] | None = None,
    ) -> None:
        """Accept ``token`` as ``user``; ``read_only`` forbids writes (dry runs too, as RBAC
        does), ``namespaces`` forbids everything outside them, cluster scope included."""
        with self._lock:
            scope = frozenset(namespaces) if namespaces is not None else None
            self._tokens[token] = _Token(user, read_only, scope)

    # -- seeding and reading state ---------------------------------------------

    def add_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> Json:
        meta: Json = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        return self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})

    def seed(self, obj: Json) -> Json:
        """Store ``obj`` as it is (status and managedFields included) without an HTTP call;
        creates a missing namespace, registers a CRD. Returns the stored object."""
        with self._lock:
            rtype = self._type_for(obj.get("apiVersion", ""), obj.get("kind", ""))
            incoming = copy.deepcopy(obj)
            meta = incoming.setdefault("metadata", {})
            name, namespace = meta.get("name"), meta.get("namespace")
            if not name:
                raise ValueError("a seeded object needs metadata.name")
            if rtype.namespaced and not namespace:
                raise ValueError(f"a seeded {rtype.kind} needs metadata.namespace")
            if rtype.namespaced and not self._namespace_exists(namespace):
                self.add_namespace(namespace)
            managers = [
                _Manager(
                    manager=entry.get("manager", ""),
                    operation=entry.get("operation", "Update"),
                    api_version=entry.get("apiVersion", rtype.api_version),
                    subresource=entry.get("subresource", ""),
                    time=entry.get("time", _now()),
                    fields=frozenset(_parse_fields_tree(entry.get("fieldsV1") or {})),
                )
                for entry in meta.pop("managedFields", None) or []
            ]
            self._rv += 1
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = str(self._rv)
            if rtype.tracks_generation or rtype.custom:
                meta.setdefault("generation", 1)
            if rtype.kind == "Namespace":
                incoming.setdefault("status", {"phase": "Active"})
            if rtype.group == CRD_GROUP:
                incoming.setdefault("status", _crd_status(incoming))
            if not rtype.custom:
                incoming = _normalise_times(incoming)
            key = (namespace or "", name)
            previous = self._bucket(rtype).get(key)
            self._put(rtype, key, _Stored(incoming, managers))
            self._after_write(rtype, previous.obj if previous else None, incoming)
            return copy.deepcopy(self._bucket(rtype)[key].obj)

    def get_object(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Json | None:
        """The stored object, or None."""
        with self._lock:
            rtype = self._type_for(api_version, kind)
            stored = self._bucket(rtype).get((namespace or "", name))
            return copy.deepcopy(stored.obj) if stored else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[Json]:
        """Stored objects of one type (in ``namespace`` when given), sorted by key."""
        with self._lock:
            rtype = self._type_for(api_version, kind)
            bucket = self._bucket(rtype)
            return [
                copy.deepcopy(bucket[key].obj)
                for key in sorted(bucket)
                if namespace is None or key[0] == namespace
            ]

    def set_status(
        self, api_version: str, kind: str, name: str, status: Json, namespace: str | None = None
    ) -> Json:
        """Replace ``.status`` as a controller would (bumps resourceVersion, not counted)."""
        with self._lock:
            rtype = self._type_for(api_version, kind)
            key = (namespace or "", name)
            stored = self._bucket(rtype).get(key)
            if stored is None:
                raise KeyError(f"{rtype.resource} {key} not stored")
            obj = copy.deepcopy(stored.obj)
            obj["status"] = copy.deepcopy(status)
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._put(rtype, key, _Stored(obj, stored.managers))
            return copy.deepcopy(obj)

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def served_types(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    # -- call accounting ---------------------------------------------------------

    def calls(self, verb: str | None = None, *, dry_run: bool | None = False) -> Counter[str]:
        """Requests per verb (``apply`` is counted apart from ``patch``); by default dry
        runs are left out, ``dry_run=True`` counts only them, None counts both."""
        with self._lock:
            return Counter(
                r.verb
                for r in self.requests
                if r.verb is not None
                and (verb is None or r.verb == verb)
                and (dry_run is None or r.dry_run == dry_run)
            )

    def calls_by_kind(
        self, verb: str, *, status: int | None = None, dry_run: bool | None = False
    ) -> Counter[str]:
        """Requests of ``verb`` per resource kind (optionally only those answered
        ``status``, e.g. ``calls_by_kind("get", status=404)``)."""
        with self._lock:
            return Counter(
                r.kind or "?"
                for r in self.requests
                if r.verb == verb
                and (status is None or r.status == status)
                and (dry_run is None or r.dry_run == dry_run)
            )

    def write_calls(self, *, dry_run: bool | None = False) -> int:
        """How many write requests (create/update/patch/apply/delete/deletecollection)."""
        return sum(n for verb, n in self.calls(dry_run=dry_run).items() if verb in WRITE_VERBS)

    def reset_calls(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- faults --------------------------------------------------------------

    def inject(self, *faults: Fault, method: str | None = None, path: str | None = None) -> None:
        """Queue faults; each answers the next request matching ``method`` and the
        ``path`` regular expression (searched in the URL path), in order."""
        self._faults.inject(faults, method, path)

    def fail_randomly(self, fraction: float, *faults: Fault, seed: int = 0) -> None:
        """Answer about ``fraction`` of requests with one of ``faults`` (0 turns it off)."""
        self._faults.fail_randomly(fraction, faults or (Fault.error(),), seed)

    def clear_faults(self) -> None:
        self._faults.clear()
        self.latency_s = 0.0

    def pending_faults(self) -> int:
        return self._faults.pending()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        return self._faults.take(method, path)

    # -- storage helpers -----------------------------------------------------------

    def _type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rtype in self._types.values():
            if (rtype.group, rtype.version, rtype.kind) == (group, version, kind):
                return rtype
        raise KeyError(f"no served resource for apiVersion {api_version!r} kind {kind!r}")

    def _bucket(self, rtype: ResourceType) -> dict[tuple[str, str], _Stored]:
        return self._store.setdefault((rtype.group, rtype.plural), {})

    def _put(self, rtype: ResourceType, key: tuple[str, str], stored: _Stored) -> None:
        meta = stored.obj["metadata"]
        meta.pop("managedFields", None)
        if stored.managers:
            meta["managedFields"] = [m.render() for m in stored.managers]
        self._bucket(rtype)[key] = stored

    def _namespace_exists(self, namespace: str) -> bool:
        return ("", namespace) in self._store.get(("", "namespaces"), {})

    def _after_write(self, rtype: ResourceType, old: Json | None, new: Json | None) -> None:
        """Keep the served types in step with the stored CRDs."""
        if rtype.group != CRD_GROUP or rtype.plural != "customresourcedefinitions":
            return
        if old is not None:
            for custom in _crd_types(old):
                self._types.pop((custom.group, custom.version, custom.plural), None)
        if new is not None:
            for custom in _crd_types(new):
                self._types[(custom.group, custom.version, custom.plural)] = custom
        elif old is not None:
            spec = old.get("spec") or {}
            plural = (spec.get("names") or {}).get("plural", "")
            self._store.pop((spec.get("group", ""), plural), None)

    # -- HTTP entry ----------------------------------------------------------

    def _authenticate(self, header: str | None) -> _Token:
        scheme, _, credential = (header or "").partition(" ")
        token = self._tokens.get(credential.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise KeyError("unauthorized")
        return token

    def _serve(self, call: _Call) -> tuple[int, Any]:
        """Answer one authenticated request: (status, body)."""
        parts = [p for p in call.path.split("/") if p]
        if parts == ["version"]:
            return 200, self._version_info()
        with self._lock:
            if parts == ["api"]:
                return 200, self._api_versions()
            if parts == ["apis"]:
                return 200, self._group_list()
            if len(parts) == 2 and parts[0] == "apis":
                return 200, self._group(parts[1])
            if parts[:2] == ["api", "v1"]:
                group, version, rest = "", "v1", parts[2:]
            elif len(parts) >= 3 and parts[0] == "apis":
                group, version, rest = parts[1], parts[2], parts[3:]
            else:
                raise _no_route()
            if not rest:
                if call.method != "GET":
                    raise KubeError(
                        405, "MethodNotAllowed", "the server does not allow this method"
                    )
                return 200, self._resource_list(group, version)
            target = self._target(group, version, rest)
            call.verb = _verb(call, target)
            call.kind = target.rtype.kind
            self._authorize(call.token, call.verb, target)
            return getattr(self, f"_do_{call.verb}")(call, target)

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise _no_route()
        rtype = self._types.get((group, version, rest[0]))
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise _no_route()
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and (subresource != "status" or not rtype.status_subresource):
            raise _no_route()
        if rtype.namespaced and namespace is None and name is not None:
            raise _no_route()
        return _Target(rtype, namespace, name, subresource)

    def _authorize(self, token: _Token | None, verb: str, target: _Target) -> None:
        assert token is not None
        allowed = not (token.read_only and verb in WRITE_VERBS)
        if token.namespaces is not None:
            allowed = allowed and target.namespace in token.namespaces
        if allowed:
            return
        rtype = target.rtype
        subject = f'{rtype.resource} "{target.name}"' if target.name else rtype.resource
        resource = rtype.plural + (f"/{target.subresource}" if target.subresource else "")
        scope = (
            f'in the namespace "{target.namespace}"' if target.namespace else "at the cluster scope"
        )
        api_verb = "patch" if verb == "apply" else verb
        raise KubeError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{token.user}" cannot {api_verb} resource '
            f'"{resource}" in API group "{rtype.group}" {scope}',
            _details(rtype, target.name),
        )

    # -- discovery -------------------------------------------------------------

    def _version_info(self) -> Json:
        major, minor, _ = GIT_VERSION[1:].split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": GIT_VERSION,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2024-12-10T11:37:21Z",
            "goVersion": "go1.22.9",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _api_versions(self) -> Json:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.host.removeprefix("http://")}
            ],
        }

    def _groups(self) -> dict[str, list[str]]:
        versions: dict[str, set[str]] = {}
        for rtype in self._types.values():
            if rtype.group:
                versions.setdefault(rtype.group, set()).add(rtype.version)
        return {g: sorted(v, key=_version_priority) for g, v in versions.items()}

    def _group_json(self, name: str, versions: list[str]) -> Json:
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": entries, "preferredVersion": dict(entries[0])}

    def _group_list(self) -> Json:
        groups = [self._group_json(n, v) for n, v in self._groups().items()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _group(self, name: str) -> Json:
        versions = self._groups().get(name)
        if versions is None:
            raise _no_route()
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_json(name, versions)}

    def _resource_list(self, group: str, version: str) -> Json:
        types = [t for t in self._types.values() if (t.group, t.version) == (group, version)]
        if not types:
            raise _no_route()
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for t in types for entry in t.discovery()],
        }

    # -- reads -----------------------------------------------------------------

    def _served(self, rtype: ResourceType, obj: Json) -> Json:
        if obj.get("apiVersion") == rtype.api_version:
            return obj
        return {**obj, "apiVersion": rtype.api_version}

    def _live(self, target: _Target) -> _Stored | None:
        return self._bucket(target.rtype).get((target.namespace or "", target.name or ""))

    def _live_or_404(self, target: _Target) -> _Stored:
        stored = self._live(target)
        if stored is None:
            raise _not_found(target.rtype, target.name or "")
        return stored

    def _do_get(self, call: _Call, target: _Target) -> tuple[int, Json]:
        return 200, self._served(target.rtype, self._live_or_404(target).obj)

    def _selected(self, call: _Call, target: _Target) -> list[tuple[tuple[str, str], Json]]:
        labels = _label_matcher(call.query.get("labelSelector", ""))
        fields = _field_matcher(call.query.get("fieldSelector", ""))
        bucket = self._bucket(target.rtype)
        chosen = []
        for key in sorted(bucket):
            if target.namespace is not None and key[0] != target.namespace:
                continue
            obj = bucket[key].obj
            meta = obj["metadata"]
            if labels(meta.get("labels") or {}) and fields(meta):
                chosen.append((key, obj))
        return chosen

    def _list_body(self, rtype: ResourceType, items: list[Json], meta: Json) -> Json:
        if not rtype.custom:
            # The real server leaves kind/apiVersion out of built-in list items.
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in items]
        else:
            items = [self._served(rtype, o) for o in items]
        return {
            "kind": rtype.list_kind,
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self._rv), **meta},
            "items": items,
        }

    def _do_list(self, call: _Call, target: _Target) -> tuple[int, Json]:
        if call.query.get("watch") in ("true", "1"):
            raise KubeError(405, "MethodNotAllowed", "watch is not supported by this emulator")
        chosen = self._selected(call, target)
        token = call.query.get("continue")
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token))["after"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _bad_request("continue key is not valid") from exc
            chosen = [(key, obj) for key, obj in chosen if key > after]
        meta: Json = {}
        limit = int(call.query.get("limit") or 0)
        if limit and len(chosen) > limit:
            last = chosen[limit - 1][0]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"after": list(last)}).encode()
            ).decode()
            meta["remainingItemCount"] = len(chosen) - limit
            chosen = chosen[:limit]
        return 200, self._list_body(target.rtype, [obj for _, obj in chosen], meta)

    # -- writes ----------------------------------------------------------------

    def _incoming(self, call: _Call, target: _Target, body: Json) -> Json:
        """The request body checked against the URL, with kind/apiVersion defaulted."""
        rtype = target.rtype
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", rtype.api_version)
        obj.setdefault("kind", rtype.kind)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        name = meta.get("name") or ""
        if (obj["apiVersion"], obj["kind"]) != (rtype.api_version, rtype.kind):
            raise _invalid(
                rtype.kind,
                rtype.group,
                name,
                [
                    (
                        "kind",
                        "FieldValueInvalid",
                        f'Invalid value: "{obj["apiVersion"]}, Kind={obj["kind"]}": '
                        f"must be {rtype.api_version}, Kind={rtype.kind} for this URL",
                    )
                ],
            )
        if target.namespace is not None:
            if meta.get("namespace", target.namespace) != target.namespace:
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = target.namespace
        else:
            meta.pop("namespace", None)
        if target.name is not None and name and name != target.name:
            raise _bad_request(
                f"the name of the object ({name}) does not match the name on the URL "
                f"({target.name})"
            )
        if target.name is not None:
            meta["name"] = target.name
        return obj if rtype.custom else _normalise_times(obj)

    def _validate(self, rtype: ResourceType, obj: Json) -> None:
        meta = obj["metadata"]
        name = meta.get("name") or ""
        causes: list[tuple[str, str, str]] = []
        if not name:
            causes.append(
                (
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                )
            )
        elif rtype.kind in ("Namespace", "Service"):
            if len(name) > 63 or not _DNS1123_LABEL.match(name):
                causes.append(
                    (
                        "metadata.name",
                        "FieldValueInvalid",
                        f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of '
                        "lower case alphanumeric characters or '-', and must start and end "
                        "with an alphanumeric character",
                    )
                )
        elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            causes.append(
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                    "lower case alphanumeric characters, '-' or '.', and must start and end "
                    "with an alphanumeric character",
                )
            )
        for key, value in (meta.get("labels") or {}).items():
            prefix, _, label = key.rpartition("/")
            if not (
                isinstance(key, str)
                and len(label) <= 63
                and _LABEL_NAME.match(label)
                and (not prefix or _DNS1123_SUBDOMAIN.match(prefix))
            ):
                causes.append(
                    (
                        "metadata.labels",
                        "FieldValueInvalid",
                        f"Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'",
                    )
                )
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                causes.append(
                    (
                        "metadata.labels",
                        "FieldValueInvalid",
                        f'Invalid value: "{value}": a valid label must be an empty string or '
                        "consist of alphanumeric characters, '-', '_' or '.'",
                    )
                )
        if rtype.group == CRD_GROUP and rtype.kind == "CustomResourceDefinition":
            causes.extend(_crd_problems(obj))
        if causes:
            raise _invalid(rtype.kind, rtype.group, name, causes)

    def _prepare(self, target: _Target, live: _Stored | None, candidate: Json) -> Json:
        """What would be stored: ``candidate`` with the server-owned parts from ``live``."""
        rtype = target.rtype
        if target.subresource == "status":
            assert live is not None
            result = copy.deepcopy(live.obj)
            if "status" in candidate:
                result["status"] = copy.deepcopy(candidate["status"])
            else:
                result.pop("status", None)
            return result
        result = copy.deepcopy(candidate)
        meta = result["metadata"]
        for key in SERVER_METADATA:
            meta.pop(key, None)
        if live is not None:
            for key in SERVER_METADATA:
                if key in live.obj["metadata"] and key != "managedFields":
                    meta[key] = live.obj["metadata"][key]
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if rtype.tracks_generation or rtype.custom:
                meta["generation"] = 1
        if rtype.kind == "Secret" and not rtype.group and "stringData" in result:
            # The server folds stringData into data (base64) and never stores it.
            data = dict(result.get("data") or {})
            for key, value in (result.pop("stringData") or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            result["data"] = data
        if rtype.status_subresource:
            result.pop("status", None)
            if live is not None and "status" in live.obj:
                result["status"] = copy.deepcopy(live.obj["status"])
            elif rtype.kind == "Namespace":
                result["status"] = {"phase": "Active"}
        return result

    def _commit(
        self,
        target: _Target,
        live: _Stored | None,
        result: Json,
        managers: list[_Manager],
        *,
        dry_run: bool,
    ) -> tuple[Json, bool]:
        """Store ``result`` unless it changes nothing; returns (object, changed)."""
        rtype = target.rtype
        if live is not None:
            unchanged = _without_managed(live.obj) == _without_managed(result)
            if unchanged and [m.fields for m in managers] == [m.fields for m in live.managers]:
                return live.obj, False
            if (rtype.tracks_generation or rtype.custom) and _spec(rtype, live.obj) != _spec(
                rtype, result
            ):
                result["metadata"]["generation"] = live.obj["metadata"].get("generation", 0) + 1
        if rtype.group == CRD_GROUP and target.subresource == "" and live is None:
            result["status"] = _crd_status(result)
        stored = _Stored(result, managers)
        key = (target.namespace or "", result["metadata"]["name"])
        if dry_run:
            meta = result["metadata"]
            meta.pop("managedFields", None)
            if managers:
                meta["managedFields"] = [m.render() for m in managers]
            return result, True
        self._rv += 1
        result["metadata"]["resourceVersion"] = str(self._rv)
        self._put(rtype, key, stored)
        self._after_write(rtype, live.obj if live else None, result)
        return result, True

    def _track_update(
        self,
        target: _Target,
        live: _Stored | None,
        result: Json,
        manager: str,
    ) -> list[_Manager]:
        """Managed fields after a non-apply write by ``manager``: it takes every field it
        changed from the others; fields that no longer exist leave every manager."""
        old_view = _fields_view(live.obj) if live else {}
        new_view = _fields_view(result)
        writable = _owned_part(target.rtype, new_view, target.subresource)
        changed = {p for p in _leaves(writable) if _lookup(old_view, p) != _lookup(new_view, p)}
        managers: list[_Manager] = []
        mine_seen = False
        for entry in live.managers if live else []:
            kept = {q for q in entry.fields if _lookup(new_view, q) is not _MISSING}
            is_mine = entry.same_owner(manager, "Update", target.subresource)
            if is_mine:
                mine_seen = True
                kept |= changed
            else:
                kept = {q for q in kept if not _overlaps_any(q, changed)}
            if not kept:
                continue
            if is_mine and changed:
                entry = replace(entry, fields=frozenset(kept), time=_now())
            elif kept != entry.fields:
                entry = replace(entry, fields=frozenset(kept))
            managers.append(entry)
        if changed and not mine_seen:
            managers.append(
                _Manager(
                    manager,
                    "Update",
                    target.rtype.api_version,
                    target.subresource,
                    _now(),
                    frozenset(changed),
                )
            )
        return managers

    def _write_through(
        self, call: _Call, target: _Target, live: _Stored | None, candidate: Json
    ) -> tuple[Json, bool]:
        """Validate, track managed fields and commit a create/update/patch result."""
        self._validate(target.rtype, candidate)
        result = self._prepare(target, live, candidate)
        managers = self._track_update(target, live, result, call.field_manager())
        return self._commit(target, live, result, managers, dry_run=call.dry_run)

    def _check_namespace(self, target: _Target) -> None:
        if target.namespace is not None and not self._namespace_exists(target.namespace):
            raise _namespace_not_found(target.namespace)

    def _do_create(self, call: _Call, target: _Target) -> tuple[int, Json]:
        if target.subresource:
            raise KubeError(405, "MethodNotAllowed", "the server does not allow this method")
        obj = self._incoming(call, target, call.object_body())
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        self._validate(target.rtype, obj)
        self._check_namespace(target)
        if target.namespace is None and target.rtype.namespaced:
            raise _bad_request("a namespaced object must be created inside a namespace")
        key = (target.namespace or "", meta["name"])
        if key in self._bucket(target.rtype):
            raise KubeError(
                409,
                "AlreadyExists",
                f'{target.rtype.resource} "{meta["name"]}" already exists',
                _details(target.rtype, meta["name"]),
            )
        target = replace(target, name=meta["name"])
        result, _ = self._write_through(call, target, None, obj)
        return 201, self._served(target.rtype, result)

    def _preconditions(self, target: _Target, live: _Stored, meta: Json) -> None:
        live_meta = live.obj["metadata"]
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != live_meta["resourceVersion"]:
            raise _stale(target.rtype, target.name or "")
        wanted_uid = meta.get("uid")
        if wanted_uid and wanted_uid != live_meta["uid"]:
            raise _conflict(
                target.rtype,
                target.name or "",
                f"Precondition failed: UID in precondition: {wanted_uid}, UID in object meta: "
                f"{live_meta['uid']}",
            )

    def _do_update(self, call: _Call, target: _Target) -> tuple[int, Json]:
        obj = self._incoming(call, target, call.object_body())
        live = self._live_or_404(target)
        self._preconditions(target, live, obj["metadata"])
        result, _ = self._write_through(call, target, live, obj)
        return 200, self._served(target.rtype, result)

    def _do_patch(self, call: _Call, target: _Target) -> tuple[int, Json]:
        media = call.content_type.split(";")[0].strip().lower()
        if call.query.get("force") is not None:
            raise _invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [
                    (
                        "force",
                        "FieldValueForbidden",
                        "Forbidden: may not be specified for non-apply patch",
                    )
                ],
            )
        live = self._live_or_404(target)
        patch = call.json_body()
        current = copy.deepcopy(self._served(target.rtype, live.obj))
        if media in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise _bad_request("a merge patch must be a JSON object")
            patched = _merge_patch(current, patch)
        elif media == "application/json-patch+json":
            try:
                patched = _json_patch(current, patch)
            except ValueError as exc:
                raise KubeError(
                    422, "Invalid", f"the JSON patch could not be applied: {exc}"
                ) from exc
        else:
            raise KubeError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {media}",
            )
        obj = self._incoming(call, target, patched)
        self._preconditions(target, live, obj["metadata"])
        result, _ = self._write_through(call, target, live, obj)
        return 200, self._served(target.rtype, result)

    def _do_apply(self, call: _Call, target: _Target) -> tuple[int, Json]:
        rtype = target.rtype
        manager = call.field_manager(required=True)
        try:
            config = yaml.load(call.raw or b"", Loader=yaml.CSafeLoader)
        except yaml.YAMLError as exc:
            raise _bad_request(f"error decoding YAML: {exc}") from exc
        if not isinstance(config, dict):
            raise _bad_request("the apply configuration must be an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise _bad_request("apiVersion and kind must be set in an apply configuration")
        config = self._incoming(call, target, _drop_nulls(config))
        live = self._live(target)
        if live is None:
            if target.subresource:
                raise _not_found(rtype, target.name or "")
            self._validate(rtype, config)
            self._check_namespace(target)
        else:
            self._preconditions(target, live, config["metadata"])
        live_view = _fields_view(live.obj) if live else {}
        applied_part = _owned_part(rtype, _fields_view(config), target.subresource)
        merged = _deep_merge(copy.deepcopy(live_view), applied_part)
        applied = frozenset(_leaves(applied_part))
        managers = list(live.managers) if live else []
        mine = next(
            (m for m in managers if m.same_owner(manager, "Apply", target.subresource)), None
        )
        conflicts: dict[int, set[Path]] = {}
        for index, entry in enumerate(managers):
            if entry is mine:
                continue
            for owned in entry.fields:
                if _overlaps_any(owned, applied) and _lookup(live_view, owned) != _lookup(
                    merged, owned
                ):
                    conflicts.setdefault(index, set()).add(owned)
        if conflicts and not call.force():
            raise _apply_conflict(target, [(managers[i], paths) for i, paths in conflicts.items()])
        for index, paths in conflicts.items():
            managers[index] = replace(managers[index], fields=managers[index].fields - paths)
        others = [m.fields for m in managers if m is not mine]
        for removed in (mine.fields if mine else frozenset()) - applied:
            if _overlaps_any(removed, applied) or any(_overlaps_any(removed, f) for f in others):
                continue
            _delete_path(merged, removed)
        entry = _Manager(manager, "Apply", rtype.api_version, target.subresource, _now(), applied)
        if mine is not None:
            if mine.fields == applied and live_view == merged:
                entry = mine
            managers[managers.index(mine)] = entry
        else:
            managers.append(entry)
        managers = [m for m in managers if m.fields]
        candidate = {
            "apiVersion": rtype.api_version,
            "kind": rtype.kind,
            **merged,
            "metadata": {
                **merged.get("metadata", {}),
                "name": target.name,
                **({"namespace": target.namespace} if target.namespace else {}),
            },
        }
        if live is not None:
            self._validate(rtype, candidate)
        result = self._prepare(target, live, candidate)
        obj, _ = self._commit(target, live, result, managers, dry_run=call.dry_run)
        return (200 if live else 201), self._served(rtype, obj)

    # -- deletes ----------------------------------------------------------------

    def _do_delete(self, call: _Call, target: _Target) -> tuple[int, Json]:
        if target.subresource:
            raise KubeError(405, "MethodNotAllowed", "the server does not allow this method")
        options = call.json_body() or {}
        if not isinstance(options, dict):
            raise _bad_request("DeleteOptions must be a JSON object")
        policy = call.query.get("propagationPolicy") or options.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise _invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                [("propagationPolicy", "FieldValueNotSupported", f'Unsupported value: "{policy}"')],
            )
        dry_run = call.dry_run or "All" in (options.get("dryRun") or [])
        rtype = target.rtype
        live = self._live_or_404(target)
        if rtype.kind == "Namespace" and target.name in PROTECTED_NAMESPACES:
            raise KubeError(
                403,
                "Forbidden",
                f'namespaces "{target.name}" is forbidden: this namespace may not be deleted',
                _details(rtype, target.name),
            )
        self._preconditions(target, live, options.get("preconditions") or {})
        if not dry_run:
            self._remove(rtype, (target.namespace or "", target.name or ""), policy)
        meta = live.obj["metadata"]
        if rtype.kind == "Namespace":
            gone = copy.deepcopy(live.obj)
            gone["metadata"]["deletionTimestamp"] = _now()
            gone["status"] = {"phase": "Terminating"}
            return 200, gone
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": _details(rtype, meta["name"], uid=meta["uid"]),
        }

    def _do_deletecollection(self, call: _Call, target: _Target) -> tuple[int, Json]:
        if target.rtype.kind == "Namespace":
            raise KubeError(405, "MethodNotAllowed", "the server does not allow this method")
        chosen = self._selected(call, target)
        if not call.dry_run:
            for key, _ in chosen:
                self._remove(target.rtype, key, call.query.get("propagationPolicy"))
        return 200, self._list_body(target.rtype, [obj for _, obj in chosen], {})

    def _remove(self, rtype: ResourceType, key: tuple[str, str], policy: str | None) -> None:
        stored = self._bucket(rtype).pop(key, None)
        if stored is None:
            return
        self._rv += 1
        self._after_write(rtype, stored.obj, None)
        if rtype.kind == "Namespace" and not rtype.group:
            for other in list(self._types.values()):
                if other.namespaced:
                    for child in [k for k in self._bucket(other) if k[0] == key[1]]:
                        self._remove(other, child, policy)
        if policy == "Orphan":
            return
        uid = stored.obj["metadata"]["uid"]
        for other in list(self._types.values()):
            for child_key, child in list(self._bucket(other).items()):
                owners = child.obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in owners):
                    self._remove(other, child_key, policy)


def _verb(call: _Call, target: _Target) -> str:
    named = target.name is not None
    if call.method == "GET":
        return "get" if named else "list"
    if call.method == "POST" and not named:
        return "create"
    if call.method == "PUT" and named:
        return "update"
    if call.method == "PATCH" and named:
        media = call.content_type.split(";")[0].strip().lower()
        return "apply" if media.startswith("application/apply-patch") else "patch"
    if call.method == "DELETE":
        return "delete" if named else "deletecollection"
    raise KubeError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def _without_managed(obj: Json) -> Json:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def _spec(rtype: ResourceType, obj: Json) -> Json:
    """Everything whose change bumps metadata.generation."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rtype.status_subresource else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _apply_conflict(target: _Target, found: list[tuple[_Manager, set[Path]]]) -> KubeError:
    causes = []
    lines = []
    for entry, paths in found:
        who = f'conflict with "{entry.manager}"'
        if entry.operation == "Update" or entry.subresource:
            who += f" using {entry.api_version}"
        for path in sorted(paths):
            causes.append(
                {"reason": "FieldManagerConflict", "message": who, "field": _field_string(path)}
            )
            lines.append(f"{who}: {_field_string(path)}")
    count = len(causes)
    message = f"Apply failed with {count} conflict{'s' if count != 1 else ''}: " + "; ".join(lines)
    return KubeError(
        409,
        "Conflict",
        message,
        _details(target.rtype, target.name, causes=causes),
    )


# ---------------------------------------------------------------------------
# CustomResourceDefinitions


def _crd_problems(crd: Json) -> list[tuple[str, str, str]]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    problems: list[tuple[str, str, str]] = []
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not group:
        problems.append(("spec.group", "FieldValueRequired", "Required value"))
    if not plural:
        problems.append(("spec.names.plural", "FieldValueRequired", "Required value"))
    if not kind:
        problems.append(("spec.names.kind", "FieldValueRequired", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(
            (
                "spec.scope",
                "FieldValueNotSupported",
                'Unsupported value: must be "Namespaced" or "Cluster"',
            )
        )
    versions = spec.get("versions") or []
    if not versions or any(not isinstance(v, dict) or not v.get("name") for v in versions):
        problems.append(
            (
                "spec.versions",
                "FieldValueRequired",
                "Required value: must have at least one version with a name",
            )
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        problems.append(
            (
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    name = (crd.get("metadata") or {}).get("name")
    if group and plural and name != f"{plural}.{group}":
        problems.append(
            (
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    return problems


def _crd_types(crd: Json) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    return [
        ResourceType(
            group=spec["group"],
            version=version["name"],
            kind=names["kind"],
            plural=names["plural"],
            namespaced=spec.get("scope") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()),
            status_subresource="status" in (version.get("subresources") or {}),
            tracks_generation=True,
            custom=True,
        )
        for version in spec.get("versions") or []
        if version.get("served", True)
    ]


def _crd_status(crd: Json) -> Json:
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    moment = _now()
    return {
        "acceptedNames": names,
        "conditions": [
            {
                "type": condition,
                "status": "True",
                "lastTransitionTime": moment,
                "reason": reason,
                "message": message,
            }
            for condition, reason, message in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ],
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }


# ---------------------------------------------------------------------------
# HTTP plumbing


def _make_handler(emu: KubeEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            # Without TCP_NODELAY keep-alive requests stall ~40 ms (Nagle vs delayed ACK).
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            call = _Call(
                method=method,
                path=split.path,
                query=dict(parse_qsl(split.query)),
                raw=raw,
                content_type=self.headers.get("Content-Type") or "",
                user_agent=self.headers.get("User-Agent") or "",
            )
            if emu.latency_s:
                emu._stopping.wait(emu.latency_s)
            fault = emu._take_fault(method, call.path)
            if fault is not None and fault.kind in ("drop", "stall"):
                self._record(call, None)
                if fault.kind == "stall":
                    emu._stopping.wait(fault.seconds)
                self._drop()
                return
            headers: dict[str, str] = {}
            try:
                if fault is not None:
                    raise _fault_error(fault)
                try:
                    call.token = emu._authenticate(self.headers.get("Authorization"))
                except KeyError:
                    if call.path.rstrip("/") != "/version":
                        raise KubeError(401, "Unauthorized", "Unauthorized") from None
                status, payload = emu._serve(call)
            except KubeError as exc:
                status, payload, headers = exc.code, exc.status(), exc.headers
            self._record(call, status)
            self._send(status, payload, headers)

        def _record(self, call: _Call, status: int | None) -> None:
            user = call.token.user if call.token else None
            with emu._lock:
                emu.requests.append(
                    RecordedRequest(
                        call.method,
                        call.path,
                        call.query,
                        call.verb,
                        call.dry_run,
                        status,
                        user,
                        call.kind,
                    )
                )

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                return

        def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Audit-Id", str(uuid.uuid4()))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _fault_error(fault: Fault) -> KubeError:
    reasons = {
        429: ("TooManyRequests", "Too many requests, please try again later."),
        503: ("ServiceUnavailable", "The service is temporarily unavailable."),
        504: ("Timeout", "The server was unable to return a response in the time allotted."),
    }
    reason, message = reasons.get(
        fault.status, ("InternalError", "Internal error occurred: injected fault")
    )
    details: Json | None = None
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        details = {"retryAfterSeconds": fault.retry_after}
        headers["Retry-After"] = str(fault.retry_after)
    return KubeError(fault.status, reason, message, details, headers)


@contextmanager
def running(**kwargs: Any) -> Iterator[KubeEmulator]:
    """``with running() as kube: ...``"""
    emulator = KubeEmulator(**kwargs)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
