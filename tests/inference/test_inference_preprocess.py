"""A model trained with preprocessing (head crop, histogram equalisation) is run on the pixels it was trained on:
the checkpoint says so, every backend reports it and decodes with it, `tumorcls predict` applies it, and a file
asking for a step this version does not know is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.head_images import MODEL_OPTIONS, PREPROCESS, head_files, preprocessed_checkpoint
from tests.helpers.head_images import MODEL_SIZE as SIZE
from tests.helpers.inference_fixtures import four_class_metadata, onnx_classifier
from tumorcls.cli.main import main
from tumorcls.data.decode import DecodeOptions, load_image, prepare_rgb, read_image
from tumorcls.inference.backends import ModelFileError, TorchPredictor, load_predictor
from tumorcls.inference.batching import iter_batches
from tumorcls.labels import CLASS_NAMES


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return preprocessed_checkpoint(tmp_path_factory.mktemp("preprocessed_run"), size=SIZE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return head_files(tmp_path_factory.mktemp("heads"), n=4)


def _network_on(predictor: TorchPredictor, paths: list[Path], options: DecodeOptions) -> np.ndarray:
    """The network itself (no decode of ours but prepare_rgb) on the files prepared with ``options``, as one batch
    (as predict runs them: a batch's size changes float32 rounding by ~1e-6)."""
    pixels = np.stack([prepare_rgb(load_image(p.read_bytes(), options, p.name).rgb, options) for p in paths])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(predictor.model.hparams.mean).view(1, 3, 1, 1)
    std = torch.tensor(predictor.model.hparams.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.softmax(predictor.model.net((x - mean) / std), 1).double().numpy()


def test_the_checkpoint_backend_reports_and_decodes_with_its_preprocessing(ckpt: Path) -> None:
    predictor = load_predictor(ckpt)
    assert (predictor.crop, predictor.intensity) == ("head", "equalize")
    assert predictor.decode_options() == MODEL_OPTIONS
    doc = predictor.describe()
    assert doc["crop"] == "head" and doc["intensity"] == "equalize" and doc["input_size"] == SIZE


def test_predict_gives_the_network_on_the_prepared_image(ckpt: Path, files: list[Path], capsys) -> None:
    assert main(["predict", *map(str, files), "--model", str(ckpt), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["crop"] == "head" and doc["intensity"] == "equalize"
    predictor = load_predictor(ckpt)
    assert [row["path"] for row in doc["predictions"]] == list(map(str, files))
    got = np.array([[row["probabilities"][name] for name in CLASS_NAMES] for row in doc["predictions"]])
    np.testing.assert_allclose(got, _network_on(predictor, files, MODEL_OPTIONS), atol=1e-6)
    raw = _network_on(predictor, files, DecodeOptions(size=SIZE))
    assert np.abs(got - raw).max() > 1e-2  # the raw resize would have given other answers: preprocessing applied


def test_cam_overlays_are_drawn_on_the_image_the_model_saw(ckpt: Path, files: list[Path], tmp_path: Path) -> None:
    from PIL import Image

    from tumorcls.inference.gradcam import overlay
    from tumorcls.inference.predict import run_predictions

    predictor = load_predictor(ckpt)
    (tmp_path / "cams").mkdir()
    (pred,) = run_predictions(predictor, files[:1], cam_dir=tmp_path / "cams").predictions
    prepared = read_image(files[0], MODEL_OPTIONS)
    heatmap = predictor.grad_cam()(prepared[None], [pred.index])[0]
    saved = np.asarray(Image.open(pred.cam).convert("RGB"))
    np.testing.assert_allclose(saved.astype(int), overlay(prepared, heatmap).astype(int), atol=1)


def test_batches_are_decoded_with_the_options_given(files: list[Path]) -> None:
    (batch,) = iter_batches(files, MODEL_OPTIONS, batch_size=8)
    np.testing.assert_array_equal(batch.images, np.stack([read_image(p, MODEL_OPTIONS) for p in files]))
    with pytest.raises(TypeError, match="iter_batches takes the model's DecodeOptions, got int"):
        next(iter_batches(files, SIZE))  # type: ignore[arg-type]


def test_an_older_checkpoint_without_the_keys_means_none(ckpt: Path, tmp_path: Path) -> None:
    raw = torch.load(ckpt, weights_only=True)
    for key in PREPROCESS:
        del raw["hyper_parameters"][key]
    torch.save(raw, tmp_path / "old.ckpt")
    predictor = load_predictor(tmp_path / "old.ckpt")
    assert (predictor.crop, predictor.intensity) == ("none", "none")
    assert predictor.decode_options() == DecodeOptions(size=SIZE)


def test_a_checkpoint_with_an_unknown_step_is_one_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    raw = torch.load(ckpt, weights_only=True)
    raw["hyper_parameters"]["crop"] = "skull_strip"
    torch.save(raw, tmp_path / "newer.ckpt")
    with pytest.raises(ModelFileError) as caught:
        load_predictor(tmp_path / "newer.ckpt")
    assert str(caught.value) == (
        f"'{tmp_path / 'newer.ckpt'}' asks for preprocessing this version cannot apply: "
        "unknown crop 'skull_strip'; choose one of ['none', 'head']"
    )


def test_a_foreign_onnx_file_without_preprocess_metadata_means_none(tmp_path: Path) -> None:
    predictor = load_predictor(onnx_classifier(tmp_path / "plain.onnx", metadata=four_class_metadata(CLASS_NAMES)))
    assert predictor.decode_options() == DecodeOptions(size=32)
    assert predictor.describe()["crop"] == "none" and predictor.describe()["intensity"] == "none"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (json.dumps({"crop": "skull_strip"}), "asks for preprocessing this version cannot apply: unknown crop"),
        (json.dumps({"intensity": "clahe"}), "asks for preprocessing this version cannot apply: unknown intensity"),
        (json.dumps({"crop": "head", "denoise": "nlm"}), "cannot apply: unknown step(s) ['denoise']"),
        ("crop=head", "has preprocess metadata that is not a JSON object: 'crop=head'"),
    ],
)
def test_a_foreign_onnx_file_with_unknown_preprocessing_is_refused(tmp_path: Path, value: str, reason: str) -> None:
    path = onnx_classifier(
        tmp_path / "foreign.onnx", metadata={**four_class_metadata(CLASS_NAMES), "preprocess": value}
    )
    with pytest.raises(ModelFileError) as caught:
        load_predictor(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"'{path}' ") and reason in message


def test_an_onnx_file_declaring_preprocessing_decodes_with_it(tmp_path: Path, files: list[Path], capsys) -> None:
    meta = {**four_class_metadata(CLASS_NAMES), "preprocess": json.dumps({"crop": "head", "intensity": "stretch"})}
    predictor = load_predictor(onnx_classifier(tmp_path / "m.onnx", metadata=meta))
    options = DecodeOptions(size=32, crop="head", intensity="stretch")
    assert predictor.decode_options() == options
    assert main(["predict", str(files[1]), "--model", str(tmp_path / "m.onnx"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    expected = predictor.predict_proba(read_image(files[1], options)[None])[0]
    np.testing.assert_allclose([row["probabilities"][n] for n in CLASS_NAMES], expected, atol=1e-7)
