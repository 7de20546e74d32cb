"""Prometheus metrics at `/metrics` (admins; scrape with a bearer token).

Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR to an empty directory
shared by the workers: prometheus_client then adds up every worker's samples. The backlog
gauges (`civflow_timers_*`, `civflow_deliveries*`) are read from the database on each
scrape, so every node reports the same installation-wide figures (docs/OPERATIONS.md).
"""

from __future__ import annotations

import os

from flask import Flask, Response, g
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from workflows.access import ADMIN, require

REQUESTS = Counter("civflow_http_requests_total", "HTTP requests",
                   ["method", "endpoint", "status"])
LATENCY = Histogram("civflow_http_request_seconds", "HTTP request latency",
                    ["method", "endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ACTIONS = Counter("civflow_actions_total", "Case actions fired through the API",
                  ["flow", "trigger", "outcome"])


def observe_request(req, response, seconds: float) -> None:
    endpoint = req.endpoint or "unmatched"
    REQUESTS.labels(req.method, endpoint, str(response.status_code)).inc()
    LATENCY.labels(req.method, endpoint).observe(seconds)


def count_action(flow: str, trigger: str, outcome: str = "ok", n: int = 1) -> None:
    ACTIONS.labels(flow, trigger, outcome).inc(n)


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


class BacklogCollector:
    """The database backlog as gauges, read when collected."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def collect(self):
        now = self.engine.clock()
        b = self.engine.door.reads.backlog(now=now)
        yield GaugeMetricFamily("civflow_timers_due", "Timers due and not yet fired",
                                value=b.timers_due)
        yield GaugeMetricFamily("civflow_timer_lag_seconds",
                                "How long the oldest due timer has waited",
                                value=b.lag(now, b.timers_oldest_due))
        yield GaugeMetricFamily("civflow_timers_failed",
                                "Timers that gave up after their retries",
                                value=b.timers_failed)
        deliveries = GaugeMetricFamily("civflow_deliveries",
                                       "Notification deliveries by status (sent not counted)",
                                       labels=["status"])
        for status, n in b.deliveries.items():
            deliveries.add_metric([status], n)
        yield deliveries
        yield GaugeMetricFamily("civflow_delivery_lag_seconds",
                                "How long the oldest due delivery has waited",
                                value=b.lag(now, b.deliveries_oldest_due))
        yield GaugeMetricFamily("civflow_cases_stuck",
                                "Open cases whose current step nobody can act on "
                                "(GET /api/v1/cases?stuck=true lists them)",
                                value=self.engine.count_stuck())


def init_app(app: Flask, engine) -> None:
    backlog = CollectorRegistry(auto_describe=False)
    backlog.register(BacklogCollector(engine))

    @app.get("/metrics")
    def metrics():
        require(g.viewer, ADMIN, "reading /metrics")
        return Response(generate_latest(_registry()) + generate_latest(backlog),
                        mimetype=CONTENT_TYPE_LATEST)
