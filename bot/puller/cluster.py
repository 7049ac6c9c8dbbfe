"""The puller's one door to the Kubernetes API: discovery, reads and writes, with retries.

Everything goes through the official client's ``DynamicClient``; answers come back as
plain dicts, and every failure as a :class:`ClusterError` whose message is the API
server's own (never a request body, so never a Secret value).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

T = TypeVar("T")
Json = dict[str, Any]

# 429 (API priority and fairness) and the 5xx a server answers while it restarts or is
# overloaded. urllib3 already repeats GET/PUT/DELETE on 429/503; this adds PATCH (apply
# is declarative, so repeating it is safe), POST and 500/502/504.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
LIST_CHUNK = 2000
REQUEST_TIMEOUT_S = 60.0


class ClusterError(Exception):
    """A Kubernetes API call failed. ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failed call; the server's Retry-After wins."""

    attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(hint, self.max_delay_s)
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)


def _raw(_client: Any, data: Any) -> Any:
    """A DynamicClient serializer that keeps the decoded JSON as it is: wrapping every
    field of a 1,000-item list in ResourceField objects costs more than the request."""
    return data


class Cluster:
    """A thin, retrying wrapper over ``DynamicClient``. Discovery starts on first use, so
    building one never touches the network."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        discovery_cache: Path | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.api_client = api_client
        self.retry = retry or RetryPolicy()
        self._discovery_cache = discovery_cache
        self._dynamic: DynamicClient | None = None
        self._resources: dict[tuple[str, str], Resource] = {}

    # -- discovery -------------------------------------------------------------

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            cache = str(self._discovery_cache) if self._discovery_cache else None
            self._dynamic = self._call(
                "API discovery", lambda: DynamicClient(self.api_client, cache_file=cache)
            )
        return self._dynamic

    def resource(self, api_version: str, kind: str) -> Resource:
        """The served resource for ``kind`` in ``api_version``; rediscovers once on a miss."""
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is None:
            try:
                found = self._call(
                    "API discovery",
                    lambda: self.dynamic.resources.get(api_version=api_version, kind=kind),
                )
            except ResourceNotFoundError:
                raise ClusterError(
                    f"the cluster serves no kind {kind} in {api_version}", status=404
                ) from None
            self._resources[key] = found
        return found

    def refresh_discovery(self) -> None:
        """Forget what discovery knew, so kinds registered since (new CRDs) resolve."""
        self._resources.clear()
        if self._dynamic is not None:
            self._call("API discovery", self._dynamic.resources.invalidate_cache)

    # -- reads -------------------------------------------------------------------

    def get(self, resource: Resource, name: str, namespace: str | None) -> Json | None:
        """The live object, or None when it does not exist."""
        try:
            return self._call(
                f"get {resource.kind} {name}",
                lambda: self.dynamic.get(
                    resource,
                    name=name,
                    namespace=namespace if resource.namespaced else None,
                    serializer=_raw,
                    _request_timeout=REQUEST_TIMEOUT_S,
                ),
            )
        except ClusterError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, resource: Resource, *, label_selector: str) -> list[Json]:
        """Every object of ``resource`` matching the selector, across all namespaces."""
        items: list[Json] = []
        token: str | None = None
        while True:
            page = self._call(
                f"list {resource.kind}",
                lambda token=token: self.dynamic.get(
                    resource,
                    label_selector=label_selector,
                    limit=LIST_CHUNK,
                    _continue=token,
                    serializer=_raw,
                    _request_timeout=REQUEST_TIMEOUT_S,
                ),
            )
            for item in page.get("items") or []:
                # Lists of built-in types leave kind/apiVersion off their items.
                item.setdefault("apiVersion", resource.group_version)
                item.setdefault("kind", resource.kind)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    # -- writes ------------------------------------------------------------------

    def apply(
        self,
        resource: Resource,
        body: Json,
        *,
        field_manager: str,
        force: bool,
        dry_run: bool = False,
    ) -> Json:
        """Server-side apply ``body``; returns the object as the server stored (or would
        store) it."""
        meta = body.get("metadata") or {}
        return self._call(
            f"apply {resource.kind} {meta.get('name')}",
            lambda: self.dynamic.server_side_apply(
                resource,
                body=body,
                namespace=meta.get("namespace") if resource.namespaced else None,
                field_manager=field_manager,
                force_conflicts=force,
                dry_run="All" if dry_run else None,
                serializer=_raw,
                _request_timeout=REQUEST_TIMEOUT_S,
            ),
        )

    def create(self, resource: Resource, body: Json) -> Json:
        """Create ``body``; a 409 (it exists) raises :class:`ClusterError`."""
        meta = body.get("metadata") or {}
        return self._call(
            f"create {resource.kind} {meta.get('name')}",
            lambda: self.dynamic.create(
                resource,
                body=body,
                namespace=meta.get("namespace") if resource.namespaced else None,
                serializer=_raw,
                _request_timeout=REQUEST_TIMEOUT_S,
            ),
        )

    def replace(self, resource: Resource, body: Json) -> Json:
        """Replace the object with ``body``; its ``metadata.resourceVersion`` is the
        precondition, so a concurrent writer makes this a 409 :class:`ClusterError`."""
        meta = body.get("metadata") or {}
        return self._call(
            f"replace {resource.kind} {meta.get('name')}",
            lambda: self.dynamic.replace(
                resource,
                body=body,
                name=meta.get("name"),
                namespace=meta.get("namespace") if resource.namespaced else None,
                serializer=_raw,
                _request_timeout=REQUEST_TIMEOUT_S,
            ),
        )

    def delete(
        self, resource: Resource, name: str, namespace: str | None, *, uid: str | None = None
    ) -> bool:
        """Delete one object (only if its uid still is ``uid``); False if it was gone."""
        body: Json = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call(
                f"delete {resource.kind} {name}",
                lambda: self.dynamic.delete(
                    resource,
                    name=name,
                    namespace=namespace if resource.namespaced else None,
                    body=body,
                    serializer=_raw,
                    _request_timeout=REQUEST_TIMEOUT_S,
                ),
            )
        except ClusterError as exc:
            if exc.not_found:
                return False
            raise
        return True

    # -- plumbing ----------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except ApiException as exc:
                error = _api_error(exc)
                hint = _retry_after(exc)
            except urllib3.exceptions.HTTPError as exc:
                error = ClusterError(
                    f"{what}: no answer from the API server ({type(exc).__name__})"
                )
                hint = None
            retryable = error.status is None or error.status in RETRYABLE_STATUSES
            if not retryable or attempt == self.retry.attempts:
                raise error
            self.retry.sleep(self.retry.delay(attempt, hint))
        raise AssertionError("unreachable")


def _api_error(exc: ApiException) -> ClusterError:
    """The server's Status message, not the exception text (which embeds headers)."""
    status = getattr(exc, "status", None)
    reason = str(getattr(exc, "reason", "") or "")
    message = ""
    body = getattr(exc, "body", None)
    if body:
        try:
            decoded = json.loads(body)
        except (TypeError, ValueError):
            decoded = None
        if isinstance(decoded, dict):
            message = str(decoded.get("message") or "")
            reason = str(decoded.get("reason") or reason)
    return ClusterError(message or f"HTTP {status} {reason}".strip(), status=status, reason=reason)


def _retry_after(exc: ApiException) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
