"""The predictor interface: one class per runtime behind one suffix map, the same description from every
backend, and export metadata written and read by the one spec module."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers.export_fixtures import make_checkpoint
from tests.helpers.inference_fixtures import onnx_classifier
from tumorcls.export import to_keras, to_onnx
from tumorcls.export.spec import spec_for
from tumorcls.inference import Predictor, load_predictor, predict_batch
from tumorcls.inference.backends import BACKENDS, KerasPredictor, OnnxPredictor, TorchPredictor
from tumorcls.labels import CLASS_NAMES
from tumorcls.model_file import h5_attributes, read_h5_metadata, read_metadata
from tumorcls.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("backends_run"), size=32)


def test_one_suffix_map() -> None:
    backends = {".ckpt": TorchPredictor, ".onnx": OnnxPredictor, ".h5": KerasPredictor, ".keras": KerasPredictor}
    assert backends == BACKENDS
    assert all(issubclass(cls, Predictor) for cls in BACKENDS.values())
    assert {cls.backend for cls in BACKENDS.values()} == {"checkpoint", "onnx", "keras"}


def test_checkpoint_backend_describes_its_source(ckpt: Path) -> None:
    predictor = load_predictor(ckpt, device="auto")
    doc = predictor.describe()
    assert doc == {
        "model": str(ckpt),
        "backend": "checkpoint",
        "class_names": list(CLASS_NAMES),
        "input_size": 32,
        "crop": "none",
        "intensity": "none",
        "temperature": 1.0,
        "metadata": {"temperature": "1.0", "source_checkpoint": str(ckpt), "epoch": "1", "global_step": "1"},
    }


def test_onnx_backend_describes_the_export_metadata(tmp_path: Path) -> None:
    meta = {"class_names": json.dumps(list(CLASS_NAMES)), "temperature": "2.5", "backbone": "tiny"}
    predictor = load_predictor(onnx_classifier(tmp_path / "m.onnx", metadata=meta))
    doc = predictor.describe()
    assert doc["backend"] == "onnx" and doc["temperature"] == 2.5 and doc["input_size"] == 32
    assert doc["metadata"] == meta


def test_tta_combines_views_through_the_interface(ckpt: Path, tmp_path: Path) -> None:
    """The checkpoint averages logits and reports raw probabilities; a probabilities-only backend gives the same
    combination from its probabilities; no caller asks which backend it holds."""
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    torch_predictor = load_predictor(ckpt)
    torch_predictor.temperature = 2.0  # as a calibrated checkpoint: the probabilities include it, raw_probs not
    out = predict_batch(torch_predictor, pixels, tta=True)
    mirror = np.ascontiguousarray(pixels[:, :, ::-1])
    logits = (torch_predictor.predict_logits(pixels) + torch_predictor.predict_logits(mirror)) / 2

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    np.testing.assert_allclose(out.probs, softmax(logits / 2.0), atol=1e-9)
    np.testing.assert_allclose(out.raw_probs, softmax(logits), atol=1e-9)
    onnx_out = predict_batch(load_predictor(onnx_classifier(tmp_path / "m.onnx")), pixels, tta=True)
    assert onnx_out.raw_probs is None and onnx_out.probs.shape == (3, 4)
    empty = predict_batch(torch_predictor, pixels[:0], tta=True)
    assert empty.probs.shape == (0, 4) and empty.raw_probs.shape == (0, 4)


def test_the_spec_module_reads_what_it_writes(ckpt: Path, tmp_path: Path) -> None:
    model, info = load_checkpoint(ckpt)
    spec = spec_for(model, ckpt, info)
    for io_specs, size in ((to_onnx.io_specs, 32), (to_keras.io_specs, 32)):
        declared = read_metadata(spec.metadata(*io_specs(spec)))
        assert declared.class_names == list(CLASS_NAMES) and declared.input_size == size
        assert declared.temperature == 1.0
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        for key, value in h5_attributes(spec.metadata(*to_keras.io_specs(spec))).items():
            f.attrs[key] = value
    assert read_h5_metadata(path)["class_names"] == json.dumps(list(CLASS_NAMES))
    assert read_metadata({"class_names": "a, b"}).class_names == ["a", "b"]  # other tools write comma lists
    with pytest.raises(ValueError, match="has a temperature that is not a number: 'warm'"):
        read_metadata({"temperature": "warm"})


def test_inference_does_not_import_the_exporters() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tumorcls.inference, tumorcls.cli.predict;"
        "bad = [m for m in ('tumorcls.export.to_onnx', 'tumorcls.export.to_keras', 'tumorcls.export.run', 'onnx',"
        " 'tensorflow') if m in sys.modules]; print(bad); sys.exit(len(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
