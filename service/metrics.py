"""Prometheus metrics at `/metrics` (admins; scrape with a bearer token).

Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR to an empty directory
shared by the workers: prometheus_client then adds up every worker's samples.
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


def init_app(app: Flask) -> None:
    @app.get("/metrics")
    def metrics():
        require(g.viewer, ADMIN, "reading /metrics")
        return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
