"""Prometheus metrics of one puller (a private registry, no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SYNC_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class PullerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.drift_objects = Gauge(
            "sluice_puller_drift_objects",
            "Live objects that differ from the deployed revision, per app",
            ["app"],
            registry=self.registry,
        )
        self.syncs = Counter(
            "sluice_puller_sync",
            "Deploys, rollbacks and syncs, by app and result",
            ["app", "result"],
            registry=self.registry,
        )
        self.sync_duration = Histogram(
            "sluice_puller_sync_duration_seconds",
            "Time from the start of an apply to a healthy (or failed) app",
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )

    def synced(self, app: str, result: str, duration_s: float) -> None:
        self.syncs.labels(app=app, result=result).inc()
        self.sync_duration.observe(duration_s)

    def drift(self, app: str, objects: int) -> None:
        self.drift_objects.labels(app=app).set(objects)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
