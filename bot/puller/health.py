"""Health of live objects, per kind, following Argo CD's published rules.

Argo CD's checks (gitops-engine ``pkg/health``) and kstatus agree on the substance:
a controller must have observed the latest generation, every replica must be updated
and available, a Job must have completed, a claim must be bound, a load balancer must
have an address. Objects of other kinds are healthy once they exist.

Differences from Argo CD, on purpose: there are four statuses. Argo CD's "Suspended"
(a paused Deployment, a suspended Job) counts as Healthy with a message saying so, and
its "Missing" counts as Degraded. Fields the API server defaults (``spec.replicas``,
``restartPolicy``) are read with their defaults when absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

HealthStatus = Literal["Healthy", "Progressing", "Degraded", "Unknown"]
Json = dict[str, Any]

# The app's status is its worst object's. Degraded is worst: it needs a human.
_SEVERITY: dict[str, int] = {"Healthy": 0, "Progressing": 1, "Unknown": 2, "Degraded": 3}


@dataclass(frozen=True)
class ObjectHealth:
    kind: str
    namespace: str | None
    name: str
    status: HealthStatus
    message: str = ""

    def label(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class HealthReport:
    status: HealthStatus
    objects: list[ObjectHealth] = field(default_factory=list)
    timed_out: bool = False

    @property
    def unhealthy(self) -> list[ObjectHealth]:
        return [o for o in self.objects if o.status != "Healthy"]

    def summary(self) -> str:
        """One line naming the objects that are not healthy (at most five)."""
        bad = self.unhealthy
        if not bad:
            return f"{self.status}: {len(self.objects)} objects healthy"
        shown = "; ".join(
            f"{o.label()} {o.status}" + (f" ({o.message})" if o.message else "") for o in bad[:5]
        )
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        return f"{self.status}: {shown}{more}"


def aggregate(objects: Iterable[ObjectHealth], *, timed_out: bool = False) -> HealthReport:
    items = list(objects)
    worst: HealthStatus = "Healthy"
    for item in items:
        if _SEVERITY[item.status] > _SEVERITY[worst]:
            worst = item.status
    return HealthReport(status=worst, objects=items, timed_out=timed_out)


def missing(kind: str, namespace: str | None, name: str) -> ObjectHealth:
    return ObjectHealth(kind, namespace, name, "Degraded", "missing from the cluster")


def object_health(obj: Json) -> ObjectHealth:
    """The health of one live object."""
    meta = obj.get("metadata") or {}
    kind = str(obj.get("kind") or "")
    check = _CHECKS.get((_group(str(obj.get("apiVersion") or "")), kind))
    status, message = check(obj) if check else ("Healthy", "")
    return ObjectHealth(
        kind, meta.get("namespace") or None, str(meta.get("name") or ""), status, message
    )


# -- per-kind rules --------------------------------------------------------------

Verdict = tuple[HealthStatus, str]


def _deployment(obj: Json) -> Verdict:
    spec, status = _spec(obj), _status(obj)
    name = (obj.get("metadata") or {}).get("name")
    if spec.get("paused"):
        return "Healthy", "Deployment is paused (suspended)"
    if not _generation_observed(obj):
        return "Progressing", "Waiting for rollout to finish: observed generation is older"
    progressing = _condition(status, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return "Degraded", f"Deployment {name!r} exceeded its progress deadline"
    replicas = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < replicas:
        return "Progressing", (
            f"Waiting for rollout to finish: {updated} out of {replicas} new replicas "
            "have been updated..."
        )
    if total > updated:
        return "Progressing", (
            f"Waiting for rollout to finish: {total - updated} old replicas are pending "
            "termination..."
        )
    if available < updated:
        return "Progressing", (
            f"Waiting for rollout to finish: {available} of {updated} updated replicas "
            "are available..."
        )
    return "Healthy", ""


def _statefulset(obj: Json) -> Verdict:
    spec, status = _spec(obj), _status(obj)
    observed = _int(status.get("observedGeneration"))
    if observed == 0 or _int((obj.get("metadata") or {}).get("generation")) > observed:
        return "Progressing", "Waiting for statefulset spec update to be observed..."
    replicas = _int(spec.get("replicas"), 1)
    ready = _int(status.get("readyReplicas"))
    if ready < replicas:
        return "Progressing", f"Waiting for {replicas - ready} pods to be ready..."
    strategy = spec.get("updateStrategy") or {}
    strategy_type = strategy.get("type") or "RollingUpdate"
    updated = _int(status.get("updatedReplicas"))
    rolling = strategy.get("rollingUpdate")
    if strategy_type == "RollingUpdate" and isinstance(rolling, dict):
        partition = rolling.get("partition")
        if partition is not None and updated < replicas - _int(partition):
            return "Progressing", (
                "Waiting for partitioned roll out to finish: "
                f"{updated} out of {replicas - _int(partition)} new pods have been updated..."
            )
        return "Healthy", f"partitioned roll out complete: {updated} new pods have been updated..."
    if strategy_type == "OnDelete":
        return "Healthy", f"statefulset has {ready} ready pods"
    if status.get("updateRevision") != status.get("currentRevision"):
        return "Progressing", (
            f"waiting for statefulset rolling update to complete {updated} pods at "
            f"revision {status.get('updateRevision')}..."
        )
    return "Healthy", ""


def _daemonset(obj: Json) -> Verdict:
    spec, status = _spec(obj), _status(obj)
    name = (obj.get("metadata") or {}).get("name")
    if not _generation_observed(obj):
        return "Progressing", (
            "Waiting for rollout to finish: observed daemon set generation is older"
        )
    if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return "Healthy", ""
    desired = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    if updated < desired:
        return "Progressing", (
            f"Waiting for daemon set {name!r} rollout to finish: {updated} out of {desired} "
            "new pods have been updated..."
        )
    if available < desired:
        return "Progressing", (
            f"Waiting for daemon set {name!r} rollout to finish: {available} of {desired} "
            "updated pods are available..."
        )
    return "Healthy", ""


def _replicaset(obj: Json) -> Verdict:
    spec, status = _spec(obj), _status(obj)
    if not _generation_observed(obj):
        return "Progressing", (
            "Waiting for rollout to finish: observed replica set generation is older"
        )
    failure = _condition(status, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return "Degraded", str(failure.get("message") or "ReplicaFailure")
    replicas = _int(spec.get("replicas"), 1)
    available = _int(status.get("availableReplicas"))
    if available < replicas:
        return "Progressing", (
            f"Waiting for rollout to finish: {available} out of {replicas} new replicas "
            "are available..."
        )
    return "Healthy", ""


def _job(obj: Json) -> Verdict:
    status = _status(obj)
    failed = _true_condition(status, "Failed")
    if failed is not None:
        return "Degraded", str(failed.get("message") or failed.get("reason") or "Job failed")
    complete = _true_condition(status, "Complete")
    if complete is not None:
        return "Healthy", str(complete.get("message") or "")
    if _spec(obj).get("suspend"):
        return "Healthy", "Job is suspended"
    return "Progressing", ""


def _pvc(obj: Json) -> Verdict:
    phase = _status(obj).get("phase")
    if phase == "Bound":
        return "Healthy", ""
    if phase == "Lost":
        return "Degraded", "the claim lost its volume"
    if phase in (None, "", "Pending"):
        return "Progressing", "Waiting for the claim to be bound"
    return "Unknown", f"unexpected phase {phase}"


def _service(obj: Json) -> Verdict:
    if _spec(obj).get("type") != "LoadBalancer":
        return "Healthy", ""
    return _load_balancer(obj)


def _load_balancer(obj: Json) -> Verdict:
    ingress = (_status(obj).get("loadBalancer") or {}).get("ingress")
    if ingress:
        return "Healthy", ""
    return "Progressing", "Waiting for a load balancer address"


def _pod(obj: Json) -> Verdict:
    spec, status = _spec(obj), _status(obj)
    restart_policy = spec.get("restartPolicy") or "Always"
    message = str(status.get("message") or "")
    containers = list(status.get("containerStatuses") or [])
    if restart_policy == "Always":
        # A hook-like pod (OnFailure/Never) is never judged by a waiting container:
        # its image may simply not be pullable yet.
        errors = [
            str(waiting.get("message") or waiting.get("reason"))
            for waiting in ((c.get("state") or {}).get("waiting") for c in containers)
            if isinstance(waiting, dict) and _is_error_reason(str(waiting.get("reason") or ""))
        ]
        if errors:
            return "Degraded", ", ".join(errors)
    phase = status.get("phase")
    if phase in (None, "", "Pending"):
        return "Progressing", message
    if phase == "Succeeded":
        return "Healthy", message
    if phase == "Failed":
        if message:
            return "Degraded", message
        for container in list(status.get("initContainerStatuses") or []) + containers:
            reason = _termination_message(container)
            if reason:
                return "Degraded", reason
        return "Degraded", ""
    if phase == "Running":
        if restart_policy != "Always":
            return "Progressing", message
        ready = _condition(status, "Ready")
        if ready and ready.get("status") == "True":
            return "Healthy", message
        if any((c.get("lastState") or {}).get("terminated") for c in containers):
            return "Degraded", message or "a container restarted and the pod is not ready"
        return "Progressing", message
    return "Unknown", message


def _is_error_reason(reason: str) -> bool:
    return reason.startswith("Err") or reason.endswith("Error") or reason.endswith("BackOff")


def _termination_message(container: Json) -> str:
    terminated = (container.get("state") or {}).get("terminated")
    if not isinstance(terminated, dict):
        return ""
    if terminated.get("message"):
        return str(terminated["message"])
    if terminated.get("reason") == "OOMKilled":
        return "OOMKilled"
    code = _int(terminated.get("exitCode"))
    if code:
        return f"container {container.get('name')!r} failed with exit code {code}"
    return ""


_CHECKS: dict[tuple[str, str], Callable[[Json], Verdict]] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("", "Pod"): _pod,
    ("networking.k8s.io", "Ingress"): _load_balancer,
}


# -- helpers ---------------------------------------------------------------------


def _group(api_version: str) -> str:
    group, sep, _ = api_version.rpartition("/")
    return group if sep else ""


def _spec(obj: Json) -> Json:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: Json) -> Json:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _generation_observed(obj: Json) -> bool:
    generation = _int((obj.get("metadata") or {}).get("generation"))
    return generation <= _int(_status(obj).get("observedGeneration"))


def _condition(status: Json, kind: str) -> Json | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


def _true_condition(status: Json, kind: str) -> Json | None:
    condition = _condition(status, kind)
    return condition if condition and condition.get("status") == "True" else None
