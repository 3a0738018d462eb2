"""Exports of a model trained with preprocessing (head crop, histogram equalisation): the ONNX metadata and the .h5
attributes declare it, the backends read it back and decode with it, parity and calibration images are prepared
with it, and the .h5 export warns that the tutorial's app would feed it the raw image."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch._dynamo  # noqa: F401 - before TensorFlow: importing it after TensorFlow 2.21 segfaults

from tests.helpers.head_images import MODEL_OPTIONS, PREPROCESS, head_files, preprocessed_checkpoint
from tests.helpers.head_images import MODEL_SIZE as SIZE
from tumorcls.data.decode import DecodeOptions, read_image
from tumorcls.errors import ExportError
from tumorcls.export import run as export_run
from tumorcls.export.run import export_checkpoint
from tumorcls.export.spec import load_for_export
from tumorcls.inference.backends import load_predictor
from tumorcls.labels import CLASS_NAMES
from tumorcls.model_file import read_metadata


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return preprocessed_checkpoint(tmp_path_factory.mktemp("pre_run"), size=SIZE, seed=2)


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("heads")
    head_files(folder, n=4)
    return folder


@pytest.fixture(scope="module")
def onnx_export(ckpt: Path, heads: Path, tmp_path_factory: pytest.TempPathFactory) -> export_run.ExportResult:
    out = tmp_path_factory.mktemp("pre_onnx") / "model.onnx"
    (result,) = export_checkpoint(ckpt, "onnx", out=out, images=[heads], n_check=4)
    return result


def test_onnx_metadata_declares_the_preprocessing(onnx_export: export_run.ExportResult) -> None:
    meta = {p.key: p.value for p in onnx.load(onnx_export.path).metadata_props}
    assert json.loads(meta["preprocess"]) == PREPROCESS
    pixels = json.loads(meta["input_spec"])["pixels"]
    assert "cropped to the square around the head" in pixels and "histogram-equalised" in pixels
    declared = read_metadata(meta)
    assert (declared.crop, declared.intensity, declared.input_size) == ("head", "equalize", SIZE)


def test_onnx_predictor_decodes_as_the_checkpoint_does(
    ckpt: Path, heads: Path, onnx_export: export_run.ExportResult
) -> None:
    from_onnx, from_ckpt = load_predictor(onnx_export.path), load_predictor(ckpt)
    assert from_onnx.decode_options() == from_ckpt.decode_options() == MODEL_OPTIONS
    assert from_onnx.describe()["crop"] == "head" and from_onnx.describe()["intensity"] == "equalize"
    # parity was checked on the prepared images, and passed
    assert onnx_export.image_source == "given images (4 images)" and onnx_export.max_abs_diff <= 1e-4
    pixels = np.stack([read_image(p, MODEL_OPTIONS) for p in sorted(heads.iterdir())])
    np.testing.assert_allclose(from_onnx.predict_proba(pixels), from_ckpt.predict_proba(pixels), atol=1e-4)


def test_parity_and_calibration_images_are_prepared_as_the_model_expects(ckpt: Path, heads: Path) -> None:
    _, spec = load_for_export(ckpt)
    assert export_run.decode_options(spec) == MODEL_OPTIONS
    expected = np.stack([read_image(p, MODEL_OPTIONS) for p in sorted(heads.iterdir())])
    np.testing.assert_array_equal(export_run.parity_images(spec, [heads], n=4).pixels, expected)
    np.testing.assert_array_equal(export_run.calibration_images(spec, [heads], n=4).pixels, expected)
    raw = np.stack([read_image(p, DecodeOptions(size=SIZE)) for p in sorted(heads.iterdir())])
    assert np.abs(expected.astype(int) - raw).mean() > 10  # the crop and equalisation changed the pixels


def test_a_file_declaring_other_inputs_fails_the_check(ckpt: Path, onnx_export: export_run.ExportResult) -> None:
    pixels = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    check = export_run.onnx_check(np.zeros((1, 4)), pixels, 1e-4, {}, expected=DecodeOptions(size=SIZE))
    with pytest.raises(ExportError) as caught:
        check(Path(onnx_export.path))
    assert str(caught.value) == (
        "the ONNX file declares inputs (size 64, crop=head, intensity=equalize) unlike the model's "
        "(size 64, crop=none, intensity=none)"
    )


def test_a_checkpoint_with_an_unknown_step_is_not_exported(ckpt: Path, tmp_path: Path) -> None:
    raw = torch.load(ckpt, weights_only=True)
    raw["hyper_parameters"]["intensity"] = "clahe"
    torch.save(raw, tmp_path / "newer.ckpt")
    with pytest.raises(ExportError) as caught:
        export_checkpoint(tmp_path / "newer.ckpt", "onnx", out=tmp_path / "m.onnx")
    assert str(caught.value) == (
        f"checkpoint '{tmp_path / 'newer.ckpt'}' asks for preprocessing this version cannot apply: "
        "unknown intensity 'clahe'; choose one of ['none', 'stretch', 'equalize']"
    )
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow  # a Keras conversion and its parity check
def test_keras_export_records_the_preprocessing_and_warns(
    ckpt: Path, heads: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("tensorflow", reason="the Keras export needs the [keras] extra")
    pytest.importorskip("tf_keras", reason="the Keras export needs the [keras] extra")
    import h5py

    out = tmp_path / "model.h5"
    with caplog.at_level(logging.WARNING, logger="tumorcls.export.to_keras"):
        (result,) = export_checkpoint(ckpt, "keras", out=out, images=[heads], n_check=4)
    warnings = [r.getMessage() for r in caplog.records if r.name == "tumorcls.export.to_keras"]
    assert warnings == [
        "model.h5 expects images already prepared as its tumorcls_preprocess attribute says (crop=head, "
        "intensity=equalize), not the raw image the tutorial's app feeds it; tumorcls predict, evaluate and serve "
        "prepare them"
    ]
    assert result.max_abs_diff <= 1e-4 and result.image_source == "given images (4 images)"
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["tumorcls_preprocess"]) == PREPROCESS
        assert "histogram-equalised" in json.loads(f.attrs["tumorcls_input_spec"])["pixels"]
    predictor = load_predictor(out)
    assert predictor.decode_options() == MODEL_OPTIONS and predictor.class_names == list(CLASS_NAMES)
    pixels = np.stack([read_image(p, MODEL_OPTIONS) for p in sorted(heads.iterdir())])
    np.testing.assert_allclose(predictor.predict_proba(pixels), load_predictor(ckpt).predict_proba(pixels), atol=1e-4)


def test_a_model_without_preprocessing_exports_its_h5_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("tensorflow", reason="the Keras export needs the [keras] extra")
    pytest.importorskip("tf_keras", reason="the Keras export needs the [keras] extra")
    from tumorcls.export.spec import spec_for
    from tumorcls.export.to_keras import export_keras
    from tumorcls.models.lit_module import TumorClassifier

    model = TumorClassifier(backbone="test_efficientnet", input_size=32).eval()
    with caplog.at_level(logging.WARNING, logger="tumorcls.export.to_keras"):
        export_keras(model, tmp_path / "plain.h5", spec_for(model))
    assert [r for r in caplog.records if r.name == "tumorcls.export.to_keras"] == []
    assert load_predictor(tmp_path / "plain.h5").decode_options() == DecodeOptions(size=32)
