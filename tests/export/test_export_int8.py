"""The static export graph (constant "same" pads, pooled squeeze-excite) and the int8 ONNX export."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.helpers.export_fixtures import export_run_dir, perturb
from tumorcls.errors import ExportError
from tumorcls.export import run as export_run
from tumorcls.export.run import export_checkpoint, torch_probabilities
from tumorcls.export.spec import spec_for
from tumorcls.export.static_graph import Conv2dSame, PooledSqueezeExcite, StaticSameConv2d, same_padding, static_network
from tumorcls.export.to_onnx import onnx_bytes
from tumorcls.inference.backends import load_predictor
from tumorcls.models.lit_module import TumorClassifier


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(150, 3, 2, (0, 1)), (38, 5, 2, (1, 2)), (75, 3, 1, (1, 1)), (75, 5, 1, (2, 2)), (19, 3, 2, (1, 1))],
)
def test_same_padding_is_tensorflows(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, kernel, stride, 1) == expected
    before, after = expected
    assert (size + before + after - kernel) // stride + 1 == -(size // -stride)  # output = ceil(size / stride)


@pytest.mark.parametrize("size", [64, 67])
def test_static_network_gives_the_same_numbers_with_a_static_graph(size: int) -> None:
    torch.manual_seed(0)
    model = perturb(TumorClassifier(backbone="tf_efficientnet_b0", input_size=size, scheduler="none"))
    static = static_network(model.net, size)
    kinds = Counter(type(m).__name__ for m in static.modules())
    assert kinds[Conv2dSame.__name__] == 0 and kinds[StaticSameConv2d.__name__] == 5
    assert kinds[PooledSqueezeExcite.__name__] == 16
    assert any(isinstance(m, Conv2dSame) for m in model.net.modules())  # the model itself is left alone
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected, got = model.net(x), static(x)
    assert expected.abs().max() > 1.0 and torch.allclose(got, expected, atol=1e-5)
    ops = Counter(node.op_type for node in onnx.load_from_string(onnx_bytes(model, spec_for(model))).graph.node)
    assert ops["Shape"] == ops["Ceil"] == ops["ReduceMean"] == 0
    assert ops["GlobalAveragePool"] == 17 and ops["Pad"] == 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    # splits.csv holds a test split only: no training images to calibrate on
    return export_run_dir(tmp_path_factory.mktemp("int8run"), synthetic_root)


@pytest.fixture(scope="module")
def int8(run_dir: Path, synthetic_root: Path) -> export_run.ExportResult:
    (result,) = export_checkpoint(
        run_dir / "checkpoints/best.ckpt",
        "onnx_int8",
        data_root=synthetic_root,
        calibration=[synthetic_root / "Training"],
        n_calibrate=40,
        n_check=16,
    )
    return result


def test_int8_export_is_quantized_described_and_close(
    int8: export_run.ExportResult, run_dir: Path, synthetic_root: Path
) -> None:
    path = Path(int8.path)
    assert path == run_dir / "export" / "model.int8.onnx" and int8.format == "onnx_int8"
    proto = onnx.load(str(path))
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["QuantizeLinear"] > 10 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"])[0] == "glioma_tumor"
    quant = json.loads(meta["quantization"])
    assert quant["weights"] == "int8 per channel"
    assert quant["calibration_images"] == 32  # 40 of the 48 spread over the classes, then whole batches of 32
    assert 0.9 <= int8.details["top1_agreement"] <= 1.0 and int8.max_abs_diff == int8.details["batch_n"]
    model = export_run.load_for_export(run_dir / "checkpoints/best.ckpt")[0]
    pixels = export_run.parity_images(spec_for(model), [synthetic_root / "Testing"], n=16).pixels
    got = load_predictor(path).predict_proba(pixels)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert (got.argmax(1) == torch_probabilities(model, pixels).argmax(1)).mean() >= 0.9


def test_int8_calibrates_on_the_runs_train_split(run_dir: Path, synthetic_root: Path, tmp_path: Path) -> None:
    ckpt = run_dir / "checkpoints/best.ckpt"
    with pytest.raises(ExportError, match=r"format=onnx_int8 needs training images to calibrate on"):
        export_checkpoint(ckpt, "onnx_int8", out=tmp_path / "a.onnx", data_root=synthetic_root)
    assert not (tmp_path / "a.onnx").exists()
    with pytest.raises(ExportError, match=r"^calibration image '.*nowhere' not found$"):
        export_checkpoint(ckpt, "onnx_int8", out=tmp_path / "a.onnx", calibration=tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ExportError, match=r"^none of the given calibration images could be read$"):
        export_checkpoint(ckpt, "onnx_int8", out=tmp_path / "a.onnx", calibration=tmp_path / "bad")
    assert not (tmp_path / "a.onnx").exists()
    other = tmp_path / "run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints/best.ckpt").write_bytes(ckpt.read_bytes())
    rows = ["path,label,class_name,split"]
    for label, folder in enumerate(sorted((synthetic_root / "Training").iterdir())):
        rows += [f"{p.relative_to(synthetic_root)},{label},{folder.name},train" for p in sorted(folder.glob("*.jpg"))]
    (other / "splits.csv").write_text("\n".join(rows) + "\n")
    (result,) = export_checkpoint(
        other / "checkpoints/best.ckpt", "onnx_int8", data_root=synthetic_root, n_calibrate=24, n_check=4
    )
    assert result.image_source == "splits.csv of the run (4 images)"  # parity on the train split: no test split
    meta = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert json.loads(meta["quantization"])["calibration_images"] == 24


def test_int8_that_disagrees_is_refused(run_dir: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export_run.torch_probabilities
    monkeypatch.setattr(export_run, "torch_probabilities", lambda *args: real(*args)[:, ::-1].copy())
    out = run_dir / "refused.int8.onnx"
    before = set(run_dir.iterdir())
    with pytest.raises(ExportError, match=r"the int8 ONNX file agrees with the PyTorch model on \d+\.\d% of 8 images"):
        export_checkpoint(
            run_dir / "checkpoints/best.ckpt", "onnx_int8", out=out, calibration=synthetic_root / "Training", n_check=8
        )
    assert set(run_dir.iterdir()) == before  # nothing written, no temporary file left


def test_format_all_stays_exact_and_int8_is_named(int8: export_run.ExportResult, run_dir: Path) -> None:
    assert export_run.resolve_formats("all") == ("onnx", "keras")
    assert export_run.resolve_formats("ONNX_INT8") == ("onnx_int8",)
    with pytest.raises(ExportError, match=r"must end in \.onnx for format=onnx_int8"):
        export_run.output_paths(("onnx_int8",), run_dir, run_dir / "m.h5")
    pixels = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    assert load_predictor(int8.path).predict_proba(pixels).shape == (2, 4)


def test_percentile_failure_falls_back_to_min_max(monkeypatch: pytest.MonkeyPatch) -> None:
    from tumorcls.export import int8 as quantize_onnx

    torch.manual_seed(0)
    model = perturb(TumorClassifier(backbone="test_efficientnet", input_size=32, scheduler="none"))
    fp32 = onnx_bytes(model, spec_for(model))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    real, methods = quantize_onnx._quantize, []

    def flaky(*args):
        methods.append(args[-1])
        if args[-1] is not None:
            raise ValueError("Too many bins for data range. Cannot create 2048 finite-sized bins.")
        return real(*args)

    monkeypatch.setattr(quantize_onnx, "_quantize", flaky)
    proto = onnx.load_from_string(quantize_onnx.quantize_onnx_bytes(fp32, pixels))
    assert methods == [99.99, None]
    quant = json.loads({p.key: p.value for p in proto.metadata_props}["quantization"])
    assert quant["calibration"].startswith("min-max (percentile failed: Too many bins")
    with pytest.raises(ExportError, match="needs at least 8 calibration images, got 7"):
        quantize_onnx.quantize_onnx_bytes(fp32, pixels[:7])
