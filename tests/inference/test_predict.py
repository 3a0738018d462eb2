"""``tumorcls predict``: outputs (table, JSON, CSV), backends (checkpoint, ONNX, Keras), TTA, bad inputs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.synthetic import MARK_CENTRES, make_dataset
from tests.helpers.tiny_model import tiny_checkpoint
from tumorcls.cli.main import main
from tumorcls.data.decode import DecodeOptions, read_image
from tumorcls.inference.backends import Predictor, TorchPredictor, load_predictor, softmax
from tumorcls.inference.batching import predict_batch
from tumorcls.labels import CLASS_NAMES

assert len(MARK_CENTRES) == len(CLASS_NAMES)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 synthetic test images (4 per class) in class folders."""
    root = make_dataset(tmp_path_factory.mktemp("predict_data"), {"Testing": 4}, side=64, seed=7)
    return root / "Testing"


@pytest.fixture(scope="module")
def onnx_model(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tumorcls.export.spec import spec_for
    from tumorcls.export.to_onnx import export_onnx
    from tumorcls.models.checkpoint import load_checkpoint

    model, info = load_checkpoint(ckpt)
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", spec_for(model, ckpt, info))


def predict_json(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict, str]:
    rc = main(["predict", *args, "--json"])
    out, err = capsys.readouterr()
    return rc, json.loads(out), err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_json_output_has_every_probability_and_matches_the_model(ckpt: Path, images: Path, capsys) -> None:
    rc, doc, err = predict_json(capsys, str(images), "--model", str(ckpt))
    assert rc == 0 and error_lines(err) == []
    assert doc["backend"] == "checkpoint" and doc["class_names"] == list(CLASS_NAMES) and doc["tta"] is False
    assert len(doc["predictions"]) == 16 and doc["errors"] == []
    predictor = load_predictor(ckpt)
    paths = [Path(p["path"]) for p in doc["predictions"]]
    batch = np.stack([read_image(p, DecodeOptions(size=predictor.input_size)) for p in paths])
    expected = predictor.predict_proba(batch)
    for row, probs in zip(doc["predictions"], expected):
        got = np.array([row["probabilities"][name] for name in CLASS_NAMES])
        assert list(row["probabilities"]) == list(CLASS_NAMES)
        assert got.sum() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(got, probs, atol=1e-6)
        assert row["predicted"] == CLASS_NAMES[int(np.argmax(got))]
        assert row["confidence"] == pytest.approx(float(got.max()))
    # the tiny model learnt the synthetic task: the folder a file is in is (nearly always) its prediction
    correct = [Path(r["path"]).parent.name == r["predicted"] for r in doc["predictions"]]
    assert np.mean(correct) >= 0.9


def test_onnx_backend_gives_the_checkpoints_probabilities(ckpt: Path, onnx_model: Path, images: Path, capsys) -> None:
    _, from_ckpt, _ = predict_json(capsys, str(images), "--model", str(ckpt))
    rc, from_onnx, _ = predict_json(capsys, str(images), "--model", str(onnx_model), "--threads", "1")
    assert rc == 0 and from_onnx["backend"] == "onnx" and from_onnx["class_names"] == list(CLASS_NAMES)
    for a, b in zip(from_ckpt["predictions"], from_onnx["predictions"]):
        assert a["path"] == b["path"] and a["predicted"] == b["predicted"]
        for name in CLASS_NAMES:
            assert b["probabilities"][name] == pytest.approx(a["probabilities"][name], abs=1e-4)


def test_csv_and_table_outputs(ckpt: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "preds.csv"
    assert main(["predict", str(images / "glioma_tumor"), "--model", str(ckpt), "--csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 4 and list(rows[0]) == ["path", "predicted", "confidence", *CLASS_NAMES]
    for row in rows:
        assert sum(float(row[n]) for n in CLASS_NAMES) == pytest.approx(1.0, abs=1e-5)
        assert float(row["confidence"]) == pytest.approx(max(float(row[n]) for n in CLASS_NAMES), abs=1e-6)
    assert capsys.readouterr().out == ""  # --out: nothing on stdout
    assert main(["predict", str(images / "glioma_tumor" / "img_0.jpg"), "--model", str(ckpt)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["file", "predicted", "conf"] and len(table) == 2
    assert table[1].startswith(str(images / "glioma_tumor" / "img_0.jpg"))


def test_tta_averages_the_image_and_its_mirror(ckpt: Path, images: Path, capsys) -> None:
    path = images / "glioma_tumor" / "img_0.jpg"
    _, doc, _ = predict_json(capsys, str(path), "--model", str(ckpt), "--tta")
    predictor = load_predictor(ckpt)
    img = read_image(path, DecodeOptions(size=predictor.input_size))[None]
    # as training's TTA: softmax of the mean logits (temperature applied after averaging)
    mean_logits = (predictor.predict_logits(img) + predictor.predict_logits(img[:, :, ::-1].copy())) / 2
    expected = softmax(mean_logits, predictor.temperature)
    got = [doc["predictions"][0]["probabilities"][n] for n in CLASS_NAMES]
    np.testing.assert_allclose(got, expected[0], atol=1e-6)
    assert doc["tta"] is True


def test_tta_gives_the_same_answer_from_probabilities_only(ckpt: Path, images: Path) -> None:
    """An ONNX or Keras model gives probabilities only; TTA must still equal the checkpoint's mean-logit TTA."""

    class ProbabilitiesOnly(Predictor):
        backend, class_names = "onnx", list(CLASS_NAMES)

        def __init__(self, inner: TorchPredictor) -> None:
            self.inner, self.input_size, self.temperature = inner, inner.input_size, inner.temperature

        def predict_proba(self, batch: np.ndarray) -> np.ndarray:
            return self.inner.predict_proba(batch)

    predictor = load_predictor(ckpt)
    # a temperature makes the check stricter (it applies after the mean) and keeps the tiny model's
    # probabilities far from float underflow, where no backend that returns probabilities can recover logits
    predictor.temperature = 40.0
    batch = np.stack([read_image(p, DecodeOptions(size=predictor.input_size)) for p in sorted(images.rglob("*.jpg"))])
    expected = predict_batch(predictor, batch, tta=True).probs
    got = predict_batch(ProbabilitiesOnly(predictor), batch, tta=True).probs
    np.testing.assert_allclose(got, expected, atol=1e-9)
    mean_probs = (predictor.predict_proba(batch) + predictor.predict_proba(batch[:, :, ::-1].copy())) / 2
    assert np.abs(mean_probs - expected).max() > 1e-4  # the arithmetic mean would differ


def test_bad_files_get_one_error_line_each_and_the_rest_are_predicted(
    ckpt: Path, images: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(images / "no_tumor", folder)
    (folder / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    (folder / "empty.png").write_bytes(b"")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    missing = tmp_path / "missing.jpg"
    rc, doc, err = predict_json(capsys, str(folder), str(notes), str(missing), "--model", str(ckpt))
    assert rc == 1
    lines = error_lines(err)
    assert len(lines) == 4, err
    assert f"error: {folder / 'corrupt.jpg'}: not a readable image (UnidentifiedImageError)" in lines
    assert f"error: {folder / 'empty.png'}: empty file (0 bytes)" in lines
    assert f"error: {notes}: not a readable image (UnidentifiedImageError)" in lines
    assert f"error: {missing}: no such file or directory" in lines
    assert "Traceback" not in err
    assert len(doc["predictions"]) == 4 and len(doc["errors"]) == 4
    assert {Path(p["path"]).name for p in doc["predictions"]} == {f"img_{i}.jpg" for i in range(4)}


def test_glob_patterns_are_expanded(ckpt: Path, images: Path, capsys) -> None:
    rc, doc, _ = predict_json(capsys, str(images / "*" / "img_1.jpg"), "--model", str(ckpt))
    assert rc == 0 and len(doc["predictions"]) == 4
    rc, doc, err = predict_json(capsys, str(images / "*.nothing"), "--model", str(ckpt))
    assert rc == 1 and error_lines(err) == [f"error: {images / '*.nothing'}: no file matches this pattern"]


def test_missing_model_file_is_one_clear_line(images: Path, tmp_path: Path, capsys) -> None:
    rc = main(["predict", str(images), "--model", str(tmp_path / "nope.ckpt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: model file not found: '{tmp_path / 'nope.ckpt'}'"]
    rc = main(["predict", str(images), "--model", str(tmp_path / "model.pt")])
    assert rc == 2 and "unknown model file type '.pt'" in capsys.readouterr().err


def test_keras_model_without_tensorflow_is_one_clear_line(images: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if TensorFlow were not installed
    h5 = tmp_path / "modelv1.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    rc = main(["predict", str(images), "--model", str(h5)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs TensorFlow, which is not installed" in err[0]


def test_cam_needs_a_checkpoint(onnx_model: Path, images: Path, tmp_path: Path, capsys) -> None:
    rc = main(["predict", str(images), "--model", str(onnx_model), "--cam", str(tmp_path / "cams")])
    assert rc == 2 and "--cam needs a checkpoint (.ckpt) model" in capsys.readouterr().err


def test_temperature_in_the_checkpoint_is_applied(ckpt: Path, images: Path, tmp_path: Path, capsys) -> None:
    from tumorcls.evaluation.calibration import store_temperature

    hot = tmp_path / "hot.ckpt"
    shutil.copy(ckpt, hot)
    store_temperature(hot, 4.0)
    path = images / "meningioma_tumor" / "img_0.jpg"
    _, doc, _ = predict_json(capsys, str(path), "--model", str(hot))
    assert doc["temperature"] == 4.0
    predictor = load_predictor(ckpt)
    logits = predictor.predict_logits(read_image(path, DecodeOptions(size=predictor.input_size))[None])
    got = [doc["predictions"][0]["probabilities"][n] for n in CLASS_NAMES]
    np.testing.assert_allclose(got, softmax(logits, 4.0)[0], atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--out", "."], "is a folder; give a file path"),
    ],
)
def test_bad_options_are_one_line(
    ckpt: Path, images: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["predict", str(images), "--model", str(ckpt), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(ckpt: Path, images: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(images), "--model", str(ckpt), "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_an_invalid_stored_temperature_is_refused(ckpt: Path, tmp_path: Path) -> None:
    from tumorcls.errors import CheckpointError
    from tumorcls.models.checkpoint import load_checkpoint

    bad = torch.load(ckpt, weights_only=True)
    bad["tumorcls"] = {"temperature": -1.0}  # would silently reverse the class ranking
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="invalid calibration temperature -1.0"):
        load_checkpoint(tmp_path / "bad.ckpt")
