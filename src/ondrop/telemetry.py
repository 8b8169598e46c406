"""Prometheus metrics of one control plane, served at /metrics (prometheus-client).

Counters and histograms count what this control plane did since it started: the
attempts its pools handed to a backend, the jobs that ended (succeeded, or failed and
why), how long attempts ran and waited from their file's landing (or invocation) to their
start, storage errors by provider, and the HTTP requests it answered. Gauges are read when
scraped: the jobs queued in the store by pool (the same on every control plane of a
store) and those this control plane runs. Several control planes are scraped each, and
summed in Prometheus. docs/metrics.md lists the series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ondrop.jobs import Cause
from ondrop.store.base import FAILED, SUCCEEDED, Claim, Job, Outcome

log = logging.getLogger(__name__)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what Prometheus 2 and 3 both read
# Seconds: from tiny faas jobs to long batch ones.
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class Telemetry:
    """The metrics of one platform, in a registry of its own (not prometheus-client's
    global one: several platforms may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["service", "pool"]
        self.started = Counter(
            "ondrop_jobs_started",
            "Attempts handed to a backend (a retry is another)",
            labels,
            registry=self.registry,
        )
        self.succeeded = Counter(
            "ondrop_jobs_succeeded", "Jobs that ended succeeded", labels, registry=self.registry
        )
        self.failed = Counter(
            "ondrop_jobs_failed",
            "Jobs that ended failed (no retry left), by the cause of their last attempt",
            [*labels, "cause"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "ondrop_job_run_seconds",
            "How long attempts ran, staging in and out included",
            labels,
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self.wait_seconds = Histogram(
            "ondrop_job_wait_seconds",
            "From the file's landing (or the invocation) to an attempt's start",
            labels,
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.storage_errors = Counter(
            "ondrop_storage_errors",
            "A provider that could not be reached or answered an error, by provider",
            ["provider"],
            registry=self.registry,
        )
        self.requests = Counter(
            "ondrop_http_requests",
            "HTTP requests answered, by route (its template), method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )

    def watch(
        self,
        queued: Callable[[], Mapping[str, int]],
        running: Callable[[], Mapping[str, Mapping[str, int]]],
    ) -> None:
        """Read the jobs queued by pool and running by pool and service when scraped."""
        self.registry.register(_Gauges(queued, running))

    def attempt_started(self, claim: Claim, pool: str, began: float) -> None:
        """The claimed attempt was handed to a backend; `began` is when (time.time())."""
        service = claim.job.service
        self.started.labels(service, pool).inc()
        self.wait_seconds.labels(service, pool).observe(max(0.0, began - claim.event.time))

    def attempt_ended(
        self, claim: Claim, pool: str, outcome: Outcome, job: Job | None, ran: float | None
    ) -> None:
        """An attempt ended with `outcome` after `ran` seconds (None when it never ran:
        it could not be described, or the backend refused it); `job` is the job as
        recorded after it (None when it could not be recorded)."""
        service = claim.job.service
        if ran is not None:
            self.run_seconds.labels(service, pool).observe(max(0.0, ran))
        if outcome.provider:
            self.storage_errors.labels(outcome.provider).inc()
        if job is None:
            return
        if job.status == SUCCEEDED:
            self.succeeded.labels(service, pool).inc()
        elif job.status == FAILED:
            cause = outcome.cause.value if outcome.cause is not None else Cause.EXIT.value
            self.failed.labels(service, pool, cause).inc()

    def storage_error(self, provider: str) -> None:
        self.storage_errors.labels(provider).inc()

    def request(self, route: str, method: str, status: int) -> None:
        self.requests.labels(route, method, str(status)).inc()

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format."""
        return generate_latest(self.registry)


class _Gauges(Collector):
    def __init__(
        self,
        queued: Callable[[], Mapping[str, int]],
        running: Callable[[], Mapping[str, Mapping[str, int]]],
    ) -> None:
        self.queued, self.running = queued, running

    def collect(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "ondrop_jobs_queued", "Jobs queued in the store, by pool", labels=["pool"]
        )
        try:
            queued = self.queued()
        except Exception as exc:  # a store down for a while: the other series still count
            log.warning("/metrics: the queued jobs cannot be counted now (%s)", exc)
            queued = {}
        for pool, count in sorted(queued.items()):
            waiting.add_metric([pool], count)
        running = GaugeMetricFamily(
            "ondrop_jobs_running",
            "Jobs this control plane runs now, by pool and service",
            labels=["pool", "service"],
        )
        for pool, services in sorted(self.running().items()):
            for service, count in sorted(services.items()):
                running.add_metric([pool, service], count)
        yield waiting
        yield running
