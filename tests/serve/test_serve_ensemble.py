"""`tumorcls serve --model a --model b`: the engine and the API answer the mean of the members' probabilities (what
`tumorcls predict` gives for each member), /api/model and the page header name every member, and Grad-CAM is on
only when every member is a checkpoint."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers.export_fixtures import make_checkpoint
from tests.helpers.serve_inputs import TEMPERATURE, predict_path_probabilities
from tests.serve.conftest import LOCAL
from tumorcls.cli.serve import add_arguments, config_from_args
from tumorcls.evaluation.calibration import store_temperature
from tumorcls.inference import load_model
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.checkpoint import read_checkpoint
from tumorcls.serve.app import build_app
from tumorcls.serve.config import ServeConfig
from tumorcls.serve.engine import InferenceEngine
from tumorcls.serve.explain import NEEDS_CHECKPOINTS, cam_note
from tumorcls.serve.model_card import model_markdown, training_summary


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second member: an untrained checkpoint of another seed, named seed1.ckpt, temperature 2."""
    path = make_checkpoint(tmp_path_factory.mktemp("seed1_run"), seed=1)
    return store_temperature(path.rename(path.with_name("seed1.ckpt")), 2.0)


@pytest.fixture(scope="module")
def files(image_files: dict[str, Path]) -> list[Path]:
    return [image_files["jpeg"], image_files["png"], image_files["png2"]]


@pytest.fixture(scope="module")
def expected(ckpt: Path, other: Path, files: list[Path]) -> dict[str, np.ndarray]:
    """The mean of what `tumorcls predict` gives for each member, by file name."""
    first, second = predict_path_probabilities(ckpt, files), predict_path_probabilities(other, files)
    assert all(np.abs(first[name] - second[name]).max() > 0.05 for name in first)  # the members disagree
    return {name: (first[name] + second[name]) / 2 for name in first}


@pytest.fixture(scope="module")
def client(ckpt: Path, other: Path) -> Iterator[TestClient]:
    served = build_app(ServeConfig(model=(ckpt, other)))
    try:
        yield TestClient(served.app, base_url=LOCAL)
    finally:
        served.close()


def _probabilities(items: list[dict]) -> dict[str, np.ndarray]:
    return {item["file"]: np.array([item["probabilities"][n] for n in CLASS_NAMES]) for item in items}


def test_the_engine_answers_the_mean_of_the_members(ckpt: Path, other: Path, files: list[Path], expected) -> None:
    engine = InferenceEngine(load_model([ckpt, other]))
    try:
        results = engine.classify([(p.name, p.read_bytes()) for p in files])
    finally:
        engine.close()
    for result in results:
        np.testing.assert_allclose(result.probabilities, expected[result.name], rtol=0, atol=1e-6)


def test_the_api_answers_the_mean_and_names_every_member(client: TestClient, files: list[Path], expected) -> None:
    parts = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in files]
    answer = client.post("/api/predict", files=parts).json()
    got = _probabilities(answer["predictions"])
    assert list(got) == [p.name for p in files]
    for name, probs in got.items():
        np.testing.assert_allclose(probs, expected[name], rtol=0, atol=1e-6)
    card = client.get("/api/model").json()
    assert card == answer["model"]
    assert card["model"] == ["best.ckpt", "seed1.ckpt"] and card["backend"] == "ensemble"
    members = [(m["model"], m["backend"], m["temperature"]) for m in card["members"]]
    assert members == [("best.ckpt", "checkpoint", TEMPERATURE), ("seed1.ckpt", "checkpoint", 2.0)]
    assert card["temperature"] is None and card["explanations"] is True  # every member is a checkpoint


def test_the_page_header_names_every_member(client: TestClient, ckpt: Path, other: Path) -> None:
    card = client.get("/api/model").json()
    runs = [f"run {path.parent.parent.name}, epoch {read_checkpoint(path)['epoch']}" for path in (ckpt, other)]
    assert model_markdown(card) == (
        "**Ensemble** of 2 models, the mean of their probabilities · "
        f"`best.ckpt` (checkpoint, training: {runs[0]}, temperature {TEMPERATURE:.3f}); "
        f"`seed1.ckpt` (checkpoint, training: {runs[1]}, temperature 2.000)"
    )


def test_an_onnx_member_turns_grad_cam_off_and_the_page_says_why(ckpt: Path, onnx_model: Path) -> None:
    served = build_app(ServeConfig(model=(ckpt, onnx_model)))
    try:
        card = TestClient(served.app, base_url=LOCAL).get("/api/model").json()
    finally:
        served.close()
    assert [m["backend"] for m in card["members"]] == ["checkpoint", "onnx"] and card["explanations"] is False
    assert cam_note(card["backend"]) == NEEDS_CHECKPOINTS


def test_an_exported_ensembles_metadata_names_its_members_runs() -> None:
    members = [{"checkpoint": f"/runs/seed{i}/checkpoints/best.ckpt", "epoch": 9 + i} for i in range(2)]
    metadata = {"ensemble": json.dumps({"members": members}), "export_date": "2026-11-26T08:00:00+00:00"}
    assert training_summary(metadata) == (
        "ensemble of 2: run seed0, epoch 9; run seed1, epoch 10, exported 2026-11-26T08:00:00+00:00"
    )


def test_the_command_line_takes_model_repeated(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    one = config_from_args(parser.parse_args(["--model", "a.onnx"]))
    several = config_from_args(parser.parse_args(["--model", "a.ckpt", "--model", "b.onnx"]))
    assert one.model == Path("a.onnx") and several.model == (Path("a.ckpt"), Path("b.onnx"))
