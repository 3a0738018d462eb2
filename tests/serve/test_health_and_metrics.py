"""Liveness (/healthz: the process answers), readiness (/readyz: the model worker is alive and answered a probe
batch; a dead worker or a failing model makes it fail), and the Prometheus metrics at /metrics: requests and
errors by route and status, latency, refusals, model batch sizes and seconds, the queue depth and the budgets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.serve_inputs import encoded, scan_like
from tests.serve.conftest import LOCAL
from tumorcls.data.decode import DecodeOptions
from tumorcls.labels import CLASS_NAMES
from tumorcls.serve.app import ServedApp, build_app
from tumorcls.serve.config import ServeConfig
from tumorcls.serve.engine import InferenceEngine
from tumorcls.serve.health import Readiness

PNG = encoded(scan_like(2, 1, seed=7))


@pytest.fixture()
def served(onnx_model: Path) -> Iterator[ServedApp]:
    app = build_app(ServeConfig(model=onnx_model, max_file_bytes=1024 * 1024, max_files=4))
    yield app
    app.close()


def test_readiness_tells_whether_the_model_worker_answers(served: ServedApp) -> None:
    with TestClient(served.app, base_url=LOCAL) as client:  # runs the lifespan: the first probe batch
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["probe_seconds"] > 0
        served.engine.close()  # the worker stops, as if it had died
        assert (client.get("/readyz").status_code, client.get("/readyz").json()) == (
            503,
            {"error": "the model worker has stopped"},
        )
        assert (client.get("/healthz").status_code, client.get("/healthz").json()) == (200, {"status": "ok"})


class BrokenPredictor:
    backend, class_names, input_size, temperature = "fake", list(CLASS_NAMES), 8, None

    def predict_views(self, views: list[np.ndarray]) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(size=8)


def test_readiness_fails_while_the_model_fails_its_probe_batch() -> None:
    engine = InferenceEngine(BrokenPredictor())  # type: ignore[arg-type]
    try:
        why = asyncio.run(Readiness(engine).check())
    finally:
        engine.close()
    assert why == "the model failed its probe batch (CUDA error: an illegal memory access was encountered)"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_errors_refusals_and_model_calls(served: ServedApp) -> None:
    client = TestClient(served.app, base_url=LOCAL)
    for files in ([("a.png", PNG), ("junk.png", b"not an image")], [("b.png", PNG)]):
        assert client.post("/api/predict", files=[("files", f) for f in files]).status_code == 200
    assert client.post("/api/predict", files=[("files", ("big.png", b"\0" * (1024 * 1024 + 1)))]).status_code == 413
    assert client.get("/nope").status_code == 404
    assert client.get("/api/model", headers={"host": "evil.example"}).status_code == 400
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    got = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("tumorcls_http_requests_total", route="/api/predict", method="POST", status="200") == 2
    assert value("tumorcls_http_requests_total", route="/api/predict", method="POST", status="413") == 1
    assert value("tumorcls_http_requests_total", route="other", method="GET", status="404") == 1
    assert value("tumorcls_http_requests_total", route="/api/model", method="GET", status="400") == 1
    assert value("tumorcls_refusals_total", reason="host") == 1
    assert value("tumorcls_http_request_duration_seconds_count", route="/api/predict") == 3
    assert value("tumorcls_images_total", outcome="classified") == 2
    assert value("tumorcls_images_total", outcome="error") == 1
    assert value("tumorcls_model_batch_size_count") == 2 and value("tumorcls_model_batch_size_sum") == 2
    assert value("tumorcls_model_seconds_count") == 2 and value("tumorcls_model_seconds_sum") > 0
    assert value("tumorcls_model_queue_depth") == 0 and value("tumorcls_model_worker_up") == 1
    assert value("tumorcls_memory_budget_bytes", budget="decode memory") == 1024 * 1024 * 1024
    assert value("tumorcls_memory_budget_used_bytes", budget="body memory") == 0  # every body given back
    assert value("tumorcls_http_requests_in_flight") == 1  # this very request
