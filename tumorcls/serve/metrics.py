"""Prometheus metrics of one server (prometheus-client, a registry of its own), served at GET /metrics:

- ``tumorcls_http_requests_total{route,method,status}``: answered requests (errors: status 400 and up)
- ``tumorcls_http_request_duration_seconds{route}``: latency histogram, request start to last byte sent
- ``tumorcls_http_requests_in_flight``: requests being answered now
- ``tumorcls_refusals_total{reason}``: requests refused before any work (host, origin, key, file, quota, size,
  slow body, busy)
- ``tumorcls_client_disconnects_total``: requests whose client left before the answer
- ``tumorcls_model_queue_depth``: model jobs waiting for the model worker
- ``tumorcls_model_batch_size``: images per model call (histogram)
- ``tumorcls_model_seconds``: seconds per model call (histogram)
- ``tumorcls_images_total{outcome}``: uploads classified, or refused with their own error
- ``tumorcls_memory_budget_bytes{budget}`` / ``tumorcls_memory_budget_used_bytes{budget}``: decode and body memory
- ``tumorcls_model_worker_up``: 1 while the model worker runs

Routes are labelled by a fixed table (unknown paths are "other"), so a client cannot grow the label set."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tumorcls.serve.budget import MemoryBudget
from tumorcls.serve.engine import InferenceEngine

_EXACT_ROUTES = ("/", "/api/predict", "/api/model", "/healthz", "/readyz", "/metrics", "/login", "/logout")
_PREFIX_ROUTES = (
    "/gradio_api/upload",
    "/gradio_api/queue",
    "/gradio_api/call",
    "/gradio_api/run",
    "/gradio_api/file=",
    "/gradio_api/heartbeat",
    "/gradio_api/info",
    "/gradio_api",
    "/assets",
    "/config",
    "/theme.css",
    "/openapi.json",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def route_label(path: str) -> str:
    if path in _EXACT_ROUTES:
        return path
    return next((p for p in _PREFIX_ROUTES if path.startswith(p)), "other")


class ServerMetrics:
    """The metrics of one app; ``engine`` reports its model calls here."""

    def __init__(self, engine: InferenceEngine, budgets: list[MemoryBudget]) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tumorcls_http_requests", "Answered HTTP requests", ["route", "method", "status"], registry=registry
        )
        self.latency = Histogram(
            "tumorcls_http_request_duration_seconds", "Request latency", ["route"], registry=registry,
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.in_flight = Gauge("tumorcls_http_requests_in_flight", "Requests being answered", registry=registry)
        self.refusals = Counter("tumorcls_refusals", "Requests refused before any work", ["reason"], registry=registry)
        self.disconnects = Counter("tumorcls_client_disconnects", "Clients that left early", registry=registry)
        self.images = Counter("tumorcls_images", "Uploads by outcome", ["outcome"], registry=registry)
        self.batch_size = Histogram(
            "tumorcls_model_batch_size", "Images per model call", registry=registry, buckets=BATCH_BUCKETS
        )
        self.model_seconds = Histogram(
            "tumorcls_model_seconds", "Seconds per model call", registry=registry, buckets=LATENCY_BUCKETS
        )
        Gauge("tumorcls_model_queue_depth", "Model jobs waiting", registry=registry).set_function(engine.queue_depth)
        Gauge("tumorcls_model_worker_up", "The model worker runs", registry=registry).set_function(
            lambda: float(engine.alive)
        )
        size = Gauge("tumorcls_memory_budget_bytes", "Memory budget", ["budget"], registry=registry)
        used = Gauge("tumorcls_memory_budget_used_bytes", "Memory budget in use", ["budget"], registry=registry)
        for budget in budgets:
            size.labels(budget.what).set(budget.total)
            used.labels(budget.what).set_function(_used_of(budget))
        engine.observer = self.observe_batch

    def observe_batch(self, n_images: int, seconds: float) -> None:
        self.batch_size.observe(n_images)
        self.model_seconds.observe(seconds)

    def count_images(self, classified: int, failed: int) -> None:
        self.images.labels("classified").inc(classified)
        self.images.labels("error").inc(failed)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _used_of(budget: MemoryBudget) -> Callable[[], float]:
    return lambda: float(budget.used)


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP request by route, method and final status, and times it."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), {"code": 0}

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, counted)
        finally:
            self.metrics.in_flight.dec()
            route = route_label(scope.get("path", ""))
            code = str(status["code"] or 499)  # 499: the client left before any answer
            self.metrics.requests.labels(route, scope.get("method", ""), code).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
