"""The Python API (``tumorcls.load``): the same answers as ``tumorcls predict`` for files, folders and in-memory
arrays, ensembles, TTA, Grad-CAM where the backend has it, and one-line errors for what it cannot take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tumorcls
from tests.helpers.synthetic import make_dataset
from tests.helpers.tiny_model import tiny_checkpoint, train_tiny
from tumorcls.cli.main import main
from tumorcls.data.decode import ImageDecodeError, read_file_bytes
from tumorcls.errors import TumorclsError
from tumorcls.labels import CLASS_NAMES


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_model(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tumorcls.export.spec import spec_for
    from tumorcls.export.to_onnx import export_onnx
    from tumorcls.models.checkpoint import load_checkpoint

    model, info = load_checkpoint(ckpt)
    return export_onnx(model, tmp_path_factory.mktemp("api_onnx") / "tiny.onnx", spec_for(model, ckpt, info))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("api_data"), {"Testing": 2}, side=80, seed=5, fmt="PNG") / "Testing"


def cli_probabilities(capsys: pytest.CaptureFixture, paths: list[str], *model_args: str) -> dict[str, list[float]]:
    assert main(["predict", *paths, *model_args, "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {p["path"]: [p["probabilities"][n] for n in CLASS_NAMES] for p in doc["predictions"]}


@pytest.mark.parametrize("kind", ["ckpt", "onnx"])
def test_load_predicts_a_folder_as_tumorcls_predict_does(kind: str, request, images: Path, capsys) -> None:
    path = request.getfixturevalue("ckpt" if kind == "ckpt" else "onnx_model")
    model = tumorcls.load(path)
    results = model.predict(images)
    expected = cli_probabilities(capsys, [str(images)], "--model", str(path))
    assert [r.source for r in results] == sorted(expected) and len(results) == 8
    for r in results:
        probs = [r.probabilities[n] for n in CLASS_NAMES]
        assert np.allclose(probs, expected[r.source], atol=1e-6)
        assert r.label == CLASS_NAMES[int(np.argmax(probs))] and r.confidence == pytest.approx(max(probs))
    assert model.class_names == list(CLASS_NAMES) and model.backend == ("checkpoint" if kind == "ckpt" else "onnx")


def test_arrays_of_any_size_are_prepared_as_files_are(ckpt: Path, images: Path) -> None:
    """An RGB array of the file's own size gives the file's answer: decoding is the only difference."""
    from PIL import Image

    model = tumorcls.load(ckpt)
    files = sorted(images.rglob("*.png"))[:3]
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    assert arrays[0].shape[0] != model.predictor.input_size  # resized on the way in
    by_file = model.predict_proba(files)
    by_array = model.predict_proba(arrays)
    assert np.allclose(by_array, by_file, atol=1e-6)
    assert [r.source for r in model.predict(np.stack(arrays))] == [0, 1, 2]  # a 4-D batch: its indices


@pytest.mark.slow  # trains a second model
def test_several_files_are_their_ensemble(ckpt: Path, onnx_model: Path, images: Path, tmp_path: Path) -> None:
    other = train_tiny(tmp_path / "other.ckpt", seed=3, epochs=2, per_class=4)
    ensemble = tumorcls.load(ckpt, other)
    assert ensemble.backend == "ensemble"
    mean = (tumorcls.load(ckpt).predict_proba(images) + tumorcls.load(other).predict_proba(images)) / 2
    assert np.allclose(ensemble.predict_proba(images), mean, atol=1e-9)


def test_tta_is_the_predict_commands_tta(ckpt: Path, images: Path, capsys) -> None:
    model = tumorcls.load(ckpt)
    expected = cli_probabilities(capsys, [str(images)], "--model", str(ckpt), "--tta")
    tta = model.predict_proba(images, tta=True)
    assert np.allclose(tta, [expected[k] for k in sorted(expected)], atol=1e-6)
    assert not np.allclose(tta, model.predict_proba(images), atol=1e-4)


def test_explain_gives_one_heatmap_per_image_for_a_checkpoint_only(ckpt: Path, onnx_model: Path, images: Path) -> None:
    files = sorted(images.rglob("*.png"))[:2]
    maps = tumorcls.load(ckpt).explain(files)
    size = tumorcls.load(ckpt).predictor.input_size
    assert maps.shape == (2, size, size) and maps.min() >= 0.0 and maps.max() <= 1.0 and maps.max() > 0.0
    with pytest.raises(TumorclsError, match="needs a checkpoint"):
        tumorcls.load(onnx_model).explain(files)


def test_what_it_cannot_take_is_one_line(ckpt: Path, tmp_path: Path) -> None:
    model = tumorcls.load(ckpt)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="junk.png"):
        model.predict(junk)
    with pytest.raises(TumorclsError, match=r"image 0: expected an H x W x 3 uint8 RGB array, got float64"):
        model.predict(np.zeros((20, 20, 3)))
    with pytest.raises(ImageDecodeError, match="missing.png: no such file or directory"):
        model.predict(tmp_path / "missing.png")
    with pytest.raises(TumorclsError, match="model file not found"):
        tumorcls.load(tmp_path / "missing.onnx")
    assert read_file_bytes(junk) == b"not an image"  # nothing written over an input
