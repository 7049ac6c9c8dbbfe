"""Prometheus metrics for one app instance (a private registry, no globals).

Webhook counts are counted in the HTTP process. Job counts, durations and the
queue depth are read from the job database at scrape time, because the worker
pool runs in another process.

With several replicas Prometheus scrapes every pod, so nothing may be counted
twice: ``sluice_webhooks_total``, ``sluice_jobs_total`` and
``sluice_job_duration_seconds`` are this replica's own (the database keeps job
outcomes per replica), so ``sum()`` over pods is the fleet's total. The queue
gauges (``sluice_queue_depth``, ``sluice_jobs_running``,
``sluice_queue_oldest_age_seconds``) describe the one shared queue and read the
same on every pod: aggregate them with ``max()``, never ``sum()``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from bot.server.storage.queue import DURATION_BUCKETS, JobQueue


class Metrics:
    def __init__(self, queue: JobQueue | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhooks = Counter(
            "sluice_webhooks",
            "Webhook deliveries received, by forge, event and result",
            ["forge", "event", "result"],
            registry=self.registry,
        )
        if queue is not None:
            self.registry.register(QueueCollector(queue))

    def webhook(self, forge: str, event: str, result: str) -> None:
        self.webhooks.labels(forge=forge, event=event, result=result).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class QueueCollector(Collector):
    """Job metrics computed from the queue's durable counters."""

    def __init__(self, queue: JobQueue):
        self.queue = queue

    def describe(self) -> list[Metric]:
        return []  # unknown until collected; avoids touching the database at registration

    def collect(self) -> Iterator[Metric]:
        stats = self.queue.stats()
        depth = GaugeMetricFamily(
            "sluice_queue_depth", "Jobs waiting to run (the whole fleet's queue; use max())"
        )
        depth.add_metric([], stats.by_state.get("queued", 0))
        yield depth
        running = GaugeMetricFamily(
            "sluice_jobs_running", "Jobs running now on any replica (use max())"
        )
        running.add_metric([], stats.by_state.get("running", 0))
        yield running
        age = GaugeMetricFamily(
            "sluice_queue_oldest_age_seconds", "Age of the oldest job waiting to run"
        )
        age.add_metric([], stats.oldest_queued_age_s)
        yield age
        totals = CounterMetricFamily(
            "sluice_jobs",
            "Job attempts this replica finished, by kind and result",
            labels=["kind", "result"],
        )
        for (kind, result), count in sorted(stats.totals.items()):
            totals.add_metric([kind, result], count)
        yield totals
        durations = HistogramMetricFamily(
            "sluice_job_duration_seconds", "Time a job attempt ran", labels=["kind"]
        )
        for kind, (_count, total, buckets) in sorted(stats.durations.items()):
            cumulative, running_total = [], 0
            for bound, n in zip(
                (*map(floatToGoString, DURATION_BUCKETS), "+Inf"), buckets, strict=True
            ):
                running_total += n
                cumulative.append((bound, running_total))
            durations.add_metric([kind], cumulative, sum_value=total)
        yield durations
