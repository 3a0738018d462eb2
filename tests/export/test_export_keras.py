"""Keras .h5 export: standard layers only, loads with Keras 3 (tf.keras) and tf_keras, BGR 0..255 in,
probabilities out, exact padding for TF-"same" and symmetric EfficientNets, nothing written on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch._dynamo  # noqa: F401 - before TensorFlow: importing it after TensorFlow 2.21 segfaults

pytestmark = pytest.mark.slow  # TensorFlow/Keras conversions and their parity checks
tf = pytest.importorskip("tensorflow", reason="the Keras export needs the [keras] extra")
pytest.importorskip("tf_keras", reason="the Keras export needs the [keras] extra")

import h5py  # noqa: E402

from tests.helpers.export_fixtures import export_run_dir, perturb  # noqa: E402
from tumorcls.errors import ExportError  # noqa: E402
from tumorcls.export import run as export_run  # noqa: E402
from tumorcls.export import to_keras as export_keras  # noqa: E402
from tumorcls.export.run import export_checkpoint, torch_probabilities  # noqa: E402
from tumorcls.export.spec import spec_for  # noqa: E402
from tumorcls.export.static_graph import same_padding  # noqa: E402
from tumorcls.export.to_keras import build_keras_model  # noqa: E402
from tumorcls.inference.backends import load_predictor  # noqa: E402
from tumorcls.inference.backends.keras_h5 import keras_probabilities, load_keras_model  # noqa: E402
from tumorcls.labels import CLASS_NAMES  # noqa: E402
from tumorcls.models.checkpoint import load_checkpoint  # noqa: E402
from tumorcls.models.lit_module import TumorClassifier  # noqa: E402

STANDARD_LAYERS = {
    "InputLayer",
    "Conv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "Activation",
    "ZeroPadding2D",
    "GlobalAveragePooling2D",
    "Multiply",
    "Add",
    "Dropout",
    "Dense",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    return export_run_dir(tmp_path_factory.mktemp("krun"), synthetic_root, seed=3)


@pytest.fixture(scope="module")
def exported(run_dir: Path, synthetic_root: Path) -> export_run.ExportResult:
    (result,) = export_checkpoint(run_dir / "checkpoints/best.ckpt", "keras", data_root=synthetic_root, n_check=6)
    return result


def _pixels(n: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32)


def test_export_checked_with_both_keras_apis(run_dir: Path, exported: export_run.ExportResult) -> None:
    assert Path(exported.path) == run_dir / "export" / "model.h5"
    assert exported.image_source == "splits.csv of the run (6 images)"
    assert set(exported.details) == {"tf_keras", "keras3"} and exported.max_abs_diff <= 1e-4
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["model.h5"]


@pytest.mark.parametrize("api", ["keras3", "tf_keras"])
def test_h5_loads_and_matches_pytorch(run_dir: Path, exported: export_run.ExportResult, api: str) -> None:
    keras_model = load_keras_model(exported.path, api)
    assert tuple(keras_model.input_shape) == (None, 64, 64, 3) and tuple(keras_model.output_shape) == (None, 4)
    rgb = _pixels(5, 64)
    p_keras = keras_probabilities(keras_model, _bgr(rgb))
    p_torch = torch_probabilities(load_checkpoint(run_dir / "checkpoints/best.ckpt")[0], rgb)
    np.testing.assert_allclose(p_keras.sum(1), 1.0, atol=1e-5)
    assert np.abs(p_keras - p_torch).max() <= 1e-4
    assert p_torch.max() - p_torch.min() > 0.2  # confident, image-dependent outputs: not a trivial parity
    # RGB fed where BGR is expected gives other probabilities: the channel order is really in the model
    assert np.abs(keras_probabilities(keras_model, rgb.astype(np.float32)) - p_torch).max() > 1e-3


def test_standard_layers_and_metadata(exported: export_run.ExportResult) -> None:
    with h5py.File(exported.path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        attrs = {k: f.attrs[k] for k in f.attrs}
    assert {layer["class_name"] for layer in config["config"]["layers"]} <= STANDARD_LAYERS
    assert json.loads(attrs["tumorcls_class_names"]) == list(CLASS_NAMES)
    assert json.loads(attrs["tumorcls_preprocess"]) == {"crop": "none", "intensity": "none"}
    spec = json.loads(attrs["tumorcls_input_spec"])
    assert spec["shape"] == ["batch", 64, 64, 3] and spec["channel_order"] == "BGR" and spec["value_range"] == [0, 255]
    assert json.loads(attrs["tumorcls_training_run"])["global_step"] == 1


def test_keras_predictor_takes_rgb_and_reads_labels(run_dir: Path, exported: export_run.ExportResult) -> None:
    predictor = load_predictor(exported.path)
    assert predictor.backend == "keras" and predictor.class_names == list(CLASS_NAMES)
    assert predictor.input_size == 64 and predictor.temperature == 1.0
    rgb = _pixels(3, 64, seed=4)
    expected = torch_probabilities(load_checkpoint(run_dir / "checkpoints/best.ckpt")[0], rgb)
    assert np.abs(predictor.predict_proba(rgb) - expected).max() <= 1e-4


def test_failed_parity_writes_nothing(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export_run.torch_probabilities
    monkeypatch.setattr(export_run, "torch_probabilities", lambda *args: real(*args) + np.float32(1e-3))
    with pytest.raises(ExportError, match=r"the Keras \.h5 does not reproduce the PyTorch model: max \|dp\|"):
        export_checkpoint(run_dir / "checkpoints/best.ckpt", "keras", out=tmp_path / "bad.h5", n_check=2)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a staged temporary


def _effnet(backbone: str) -> TumorClassifier:
    torch.manual_seed(7)  # the same random weights whatever ran before in this process
    return perturb(TumorClassifier(backbone=backbone, input_size=150), seed=7, head_scale=30.0)


@pytest.mark.parametrize(
    ("backbone", "stem_padding"),
    [("tf_efficientnet_b0", "same"), ("efficientnet_b0", "valid")],  # symmetric: ZeroPadding2D + valid conv
)
def test_effnet_b0_parity_at_150(backbone: str, stem_padding: str) -> None:
    model = _effnet(backbone)
    spec = spec_for(model)
    keras_model = build_keras_model(model, spec)
    stem = keras_model.get_layer("conv_stem")
    assert stem.padding == stem_padding
    pads = [layer.name for layer in keras_model.layers if type(layer).__name__ == "ZeroPadding2D"]
    assert (len(pads) == 0) == (backbone == "tf_efficientnet_b0")
    rgb = _pixels(3, 150, seed=11)
    p_torch = torch_probabilities(model, rgb)
    p_keras = keras_probabilities(keras_model, _bgr(rgb))
    assert p_torch.max() - p_torch.min() > 0.2
    assert np.abs(p_keras - p_torch).max() <= 1e-4


def test_wrong_padding_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give efficientnet_b0 TF "same" padding: the parity tolerance must see the difference."""
    model = _effnet("efficientnet_b0")

    def tf_same(conv, hw):  # noqa: ANN001, ANN202 - stands in for _torch_pads
        k, s, d = conv.kernel_size, conv.stride, conv.dilation
        return same_padding(hw[0], k[0], s[0], d[0]), same_padding(hw[1], k[1], s[1], d[1])

    monkeypatch.setattr(export_keras, "_torch_pads", tf_same)
    keras_model = build_keras_model(model, spec_for(model))
    rgb = _pixels(3, 150, seed=11)
    assert np.abs(keras_probabilities(keras_model, _bgr(rgb)) - torch_probabilities(model, rgb)).max() > 1e-4
