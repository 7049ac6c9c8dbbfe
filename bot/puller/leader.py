"""Which puller replica may write to the cluster: leader election on a coordination.k8s.io/v1 Lease.

It follows client-go's ``leaderelection`` (what controller-runtime uses), with its usual
timings: a 15 s lease, a 10 s renew deadline, a 2 s retry period. A replica takes the
Lease when it is free or when its record has not changed for a whole lease duration, as
seen on this replica's own clock (so clock skew between nodes does not matter). Every
write is a replace with the Lease's ``resourceVersion`` as precondition: of two replicas
racing, one gets a 409 and stays a follower. A leader that could not renew for the renew
deadline stops being leader at once (``on_lost``); the lease then runs out five seconds
later at the earliest, so two replicas never both believe they lead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.puller.cluster import Cluster, ClusterError

log = logging.getLogger(__name__)
Json = dict[str, Any]
LEADER_URL_ANNOTATION = "sluice.dev/leader-url"


@dataclass(frozen=True)
class LeaseTimings:
    """controller-runtime's defaults."""

    lease_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_s < self.renew_deadline_s < self.lease_s:
            raise ValueError("lease timings need retry < renew deadline < lease duration")


class LeaderElector:
    """Takes and renews one Lease for ``identity``; ``is_leader`` says whether it holds it."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        namespace: str,
        name: str,
        identity: str,
        url: str | None = None,
        timings: LeaseTimings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.url = url
        self.timings = timings or LeaseTimings()
        self._clock = clock
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._observed_url: str | None = None
        self._renewed_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state

    @property
    def is_leader(self) -> bool:
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self.timings.renew_deadline_s

    def leader_url(self) -> str | None:
        """Where the current leader serves its API (from the Lease), if another replica."""
        if self.is_leader:
            return None
        with self._lock:
            return self._observed_url

    # -- one attempt

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        resource = self.cluster.resource("coordination.k8s.io/v1", "Lease")
        try:
            lease = self.cluster.get(resource, self.name, self.namespace)
        except ClusterError as exc:
            log.warning("leader election: cannot read lease %s: %s", self.name, exc)
            return self._failed()
        now = self._clock()
        if lease is None:
            body = self._body(None, transitions=0, acquired=_micro_now())
            return self._write(lambda: self.cluster.create(resource, body), now)
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseTransitions"),
            (lease.get("metadata") or {}).get("resourceVersion"),
        )
        with self._lock:
            if record != self._observed:
                self._observed, self._observed_at = record, now
            annotations = (lease.get("metadata") or {}).get("annotations") or {}
            self._observed_url = annotations.get(LEADER_URL_ANNOTATION)
            observed_at = self._observed_at
        holder = spec.get("holderIdentity") or ""
        mine = holder == self.identity
        duration = float(spec.get("leaseDurationSeconds") or self.timings.lease_s)
        if holder and not mine and now < observed_at + duration:
            return self._failed()  # someone else holds a live lease
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquired = spec.get("acquireTime") if mine else _micro_now()
        body = self._body(lease, transitions=transitions, acquired=acquired)
        return self._write(lambda: self.cluster.replace(resource, body), now)

    def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a follower takes over at once."""
        if not self.is_leader:
            return
        resource = self.cluster.resource("coordination.k8s.io/v1", "Lease")
        try:
            lease = self.cluster.get(resource, self.name, self.namespace)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                self.cluster.replace(resource, lease)
        except ClusterError as exc:
            log.warning("leader election: cannot release lease %s: %s", self.name, exc)
        with self._lock:
            self._renewed_at = None

    # -- the loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sluice-leader", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timings.retry_s * 2 + 5)
        if release:
            self.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            was_leader = self.is_leader
            self.try_acquire_or_renew()
            if was_leader and not self.is_leader:
                log.error("leader election: lease %s lost", self.name)
                if self._on_lost is not None:
                    self._on_lost()
            elif not was_leader and self.is_leader:
                log.info("leader election: %s now leads (lease %s)", self.identity, self.name)
            self._stop.wait(self.timings.retry_s)

    # -- helpers

    def _body(self, lease: Json | None, *, transitions: int, acquired: str | None) -> Json:
        metadata: Json = {"name": self.name, "namespace": self.namespace}
        if lease is not None:
            metadata = {**(lease.get("metadata") or {}), **metadata}
            metadata.pop("managedFields", None)
        if self.url:
            metadata["annotations"] = {
                **(metadata.get("annotations") or {}),
                LEADER_URL_ANNOTATION: self.url,
            }
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(round(self.timings.lease_s)),
                "acquireTime": acquired,
                "renewTime": _micro_now(),
                "leaseTransitions": transitions,
            },
        }

    def _write(self, write: Callable[[], Json], started: float) -> bool:
        try:
            stored = write()
        except ClusterError as exc:
            if exc.status != 409:
                log.warning("leader election: cannot write lease %s: %s", self.name, exc)
            return self._failed()
        spec = stored.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseTransitions"),
            (stored.get("metadata") or {}).get("resourceVersion"),
        )
        with self._lock:
            self._observed, self._observed_at = record, started
            self._observed_url = self.url
            self._renewed_at = started
        return True

    def _failed(self) -> bool:
        """A round that did not renew: leadership lasts until the renew deadline."""
        return self.is_leader


def _micro_now() -> str:
    """A ``MicroTime``: RFC 3339 with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
