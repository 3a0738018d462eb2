"""The static export graph (constant "same" pads, pooled squeeze-excite) and the int8 ONNX export."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.helpers.export_fixtures import export_cli, perturb, write_splits
from tests.helpers.synthetic import make_dataset
from tests.helpers.tiny_model import tiny_checkpoint
from tumorcls.config.rules import ConfigError
from tumorcls.errors import ExportError
from tumorcls.evaluation.loop import precision_of
from tumorcls.export import run as export_run
from tumorcls.export import targets as export_targets
from tumorcls.export.run import export_checkpoint, torch_probabilities
from tumorcls.export.spec import spec_for
from tumorcls.export.static_graph import Conv2dSame, PooledSqueezeExcite, StaticSameConv2d, same_padding, static_network
from tumorcls.export.to_onnx import onnx_bytes
from tumorcls.inference.backends import load_predictor
from tumorcls.labels import CLASS_NAMES
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
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 80 labelled Testing images: more than the gate's minimum of 64 check images that are not calibration images
    return make_dataset(tmp_path_factory.mktemp("int8data") / "mri", {"Training": 12, "Testing": 20}, seed=3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """The tiny trained model (it tells the classes apart: recall means something) in a run folder whose
    splits.csv holds data_root's Testing images as its test split, and no train split to calibrate on."""
    folder = tmp_path_factory.mktemp("int8run")
    (folder / "checkpoints").mkdir()
    shutil.copy(tiny_checkpoint(tmp_path_factory), folder / "checkpoints" / "best.ckpt")
    write_splits(folder, data_root)
    return folder


def _export_int8(run_dir: Path, data_root: Path, **options) -> export_run.ExportResult:
    (result,) = export_checkpoint(
        run_dir / "checkpoints/best.ckpt",
        "onnx_int8",
        data_root=data_root,
        calibration=[data_root / "Training"],
        n_calibrate=40,
        n_check=16,
        **options,
    )
    return result


@pytest.fixture(scope="module")
def int8(run_dir: Path, data_root: Path) -> export_run.ExportResult:
    return _export_int8(run_dir, data_root)


def _testing_images(run_dir: Path, data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 80 Testing images in the order the gate takes them from splits.csv (the classes in turn), and their
    class indices from their folders' names."""
    model = export_run.load_for_export(run_dir / "checkpoints/best.ckpt")[0]
    files = export_run._manifest_files(run_dir, data_root, 256, ("test",))
    pixels = export_run.parity_images(spec_for(model), files, n=len(files)).pixels
    return pixels, np.array([CLASS_NAMES.index(f.parent.name) for f in files])


def _recall_changes(float_pred: np.ndarray, int8_pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        name: float(np.mean(int8_pred[labels == c] == c) - np.mean(float_pred[labels == c] == c))
        for c, name in enumerate(CLASS_NAMES)
    }


def test_int8_export_is_quantized_described_and_gated(
    int8: export_run.ExportResult, run_dir: Path, data_root: Path
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
    # gated on all 80 test images of the run (none is a calibration image), at the default 97%
    assert int8.n_images == 80 and int8.image_source == "test and val splits of the run's splits.csv (80 images)"
    gate = int8.gate
    assert (gate["check_images"], gate["min_agreement"], gate["passed"]) == (80, 0.97, True)
    pixels, labels = _testing_images(run_dir, data_root)
    model = export_run.load_for_export(run_dir / "checkpoints/best.ckpt")[0]
    float_pred = torch_probabilities(model, pixels).argmax(1)
    int8_pred = load_predictor(path).predict_proba(pixels).argmax(1)
    assert gate["top1_agreement"] == int8.details["top1_agreement"] == np.mean(float_pred == int8_pred)
    assert gate["accuracy"]["float"] == np.mean(float_pred == labels) >= 0.9  # the model tells the classes apart
    assert {name: r["delta"] for name, r in gate["recall"].items()} == _recall_changes(float_pred, int8_pred, labels)
    assert {r["support"] for r in gate["recall"].values()} == {20}
    assert precision_of(load_predictor(path)).startswith("int8")  # what `tumorcls evaluate` records for it


def _flip_every_tenth(real):
    """The float model's probabilities with the answer of every tenth image changed (its class order reversed):
    an int8 file that agrees with the true float model agrees with this one on 90%."""

    def flipped(*args):
        probs = real(*args).copy()
        probs[::10] = probs[::10, ::-1]
        return probs

    return flipped


def test_an_int8_file_that_would_pass_at_80_percent_is_refused_in_one_line(
    run_dir: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_run, "torch_probabilities", _flip_every_tenth(export_run.torch_probabilities))
    out = run_dir / "refused.int8.onnx"
    before = set(run_dir.rglob("*"))
    with pytest.raises(ExportError) as refused:
        _export_int8(run_dir, data_root, out=out)
    message = str(refused.value)
    assert "\n" not in message
    # the flipped images are the gate's 1st, 11th, ...: splits.csv's classes in turn, glioma and no_tumor ones
    assert message == (
        "the int8 ONNX file is refused: top-1 agreement with the float model 90.0% of 80 check images "
        "(int8_min_agreement=0.97); recall change int8 - float (points): glioma_tumor +20.0, no_tumor +20.0, "
        "meningioma_tumor +0.0, pituitary_tumor +0.0; keep the float model.onnx"
    )
    assert set(run_dir.rglob("*")) == before  # nothing written, no temporary file left
    # the old threshold let it through: the report says what it costs each class
    result = _export_int8(run_dir, data_root, out=out, int8_min_agreement=0.8)
    pixels, labels = _testing_images(run_dir, data_root)
    model = export_run.load_for_export(run_dir / "checkpoints/best.ckpt")[0]
    float_pred = export_run.torch_probabilities(model, pixels).argmax(1)  # the flipped reference
    int8_pred = load_predictor(out).predict_proba(pixels).argmax(1)
    assert result.gate["top1_agreement"] == 0.9 and result.gate["passed"]
    expected = _recall_changes(float_pred, int8_pred, labels)
    assert {name: r["delta"] for name, r in result.gate["recall"].items()} == expected
    assert expected["glioma_tumor"] == pytest.approx(0.2) and expected["meningioma_tumor"] == 0.0


def test_int8_that_disagrees_everywhere_is_refused(
    run_dir: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_run.torch_probabilities
    monkeypatch.setattr(export_run, "torch_probabilities", lambda *args: real(*args)[:, ::-1].copy())
    with pytest.raises(
        ExportError,
        match=r"^the int8 ONNX file is refused: top-1 agreement with the float model 0\.0% of 80 check images",
    ):
        _export_int8(run_dir, data_root, out=run_dir / "never.int8.onnx")
    assert not (run_dir / "never.int8.onnx").exists()


def test_int8_check_images_are_never_calibration_images_and_enough(run_dir: Path, data_root: Path) -> None:
    spec = spec_for(export_run.load_for_export(run_dir / "checkpoints/best.ckpt")[0])
    calibration = export_run.calibration_images(spec, [data_root / "Training"], n=24)
    check = export_run.int8_check_images(spec, [data_root], exclude=calibration.files)
    assert len(check.files) == 128 - 24 and not set(check.files) & set(calibration.files)
    assert check.labels.tolist() == [CLASS_NAMES.index(f.parent.name) for f in check.files]
    assert check.source == "given images (104 images)"
    few = data_root / "Testing" / "glioma_tumor"
    with pytest.raises(ExportError) as refused:
        export_run.int8_check_images(spec, [few], exclude=calibration.files)
    assert str(refused.value) == (
        "the int8 gate needs at least 64 check images that are not calibration images; found 20 (given images); "
        "give images=<folders of labelled images>"
    )
    unlabelled = export_run.int8_check_images(spec, [data_root], n=64)
    assert len(unlabelled.files) == 64  # spread over the 128 files
    with pytest.raises(ConfigError, match=r"^config: n_int8_check must be an integer >= 64, got 10$"):
        export_checkpoint(run_dir / "checkpoints/best.ckpt", "onnx_int8", n_int8_check=10)
    with pytest.raises(ConfigError, match=r"^config: int8_min_agreement must be a number in \(0, 1\], got 1\.5$"):
        export_checkpoint(run_dir / "checkpoints/best.ckpt", "onnx_int8", int8_min_agreement=1.5)


def test_int8_calibrates_on_the_runs_train_split(run_dir: Path, data_root: Path, tmp_path: Path) -> None:
    ckpt = run_dir / "checkpoints/best.ckpt"
    with pytest.raises(ExportError, match=r"format=onnx_int8 needs training images to calibrate on"):
        export_checkpoint(ckpt, "onnx_int8", out=tmp_path / "a.onnx", data_root=data_root)
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
    for label, folder in enumerate(sorted((data_root / "Training").iterdir())):
        rows += [f"{p.relative_to(data_root)},{label},{folder.name},train" for p in sorted(folder.glob("*.jpg"))]
    (other / "splits.csv").write_text("\n".join(rows) + "\n")
    # a train split only: nothing to gate on but the images given
    with pytest.raises(ExportError, match=r"needs at least 64 check images .* found 0 \(test and val splits"):
        export_checkpoint(other / "checkpoints/best.ckpt", "onnx_int8", data_root=data_root, n_calibrate=24)
    (result,) = export_checkpoint(
        other / "checkpoints/best.ckpt",
        "onnx_int8",
        data_root=data_root,
        n_calibrate=24,
        n_check=4,
        images=[data_root / "Testing"],
    )
    assert result.image_source == "given images (80 images)" and result.gate["check_images"] == 80
    meta = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert json.loads(meta["quantization"])["calibration_images"] == 24


@pytest.mark.slow  # an export.py subprocess
def test_export_py_prints_the_gate_as_a_json_line(run_dir: Path, data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.int8.onnx"
    proc = export_cli(
        f"ckpt={run_dir / 'checkpoints/best.ckpt'}",
        "format=onnx_int8",
        f"out={out}",
        f"data_root={data_root}",
        f"calibration=[{data_root / 'Training'}]",
        "n_check=4",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    gate = json.loads(lines[-1])["int8_gate"]
    assert gate["check_images"] == 80 and gate["passed"] and set(gate["recall"]) == set(CLASS_NAMES)
    assert "top-1 agreement 100.0%" in lines[-2] and "int8 gate passed: top-1 agreement" in proc.stdout


def test_format_all_stays_exact_and_int8_is_named(int8: export_run.ExportResult, run_dir: Path) -> None:
    assert export_targets.resolve_formats("all") == ("onnx", "keras")
    assert export_targets.resolve_formats("ONNX_INT8") == ("onnx_int8",)
    with pytest.raises(ExportError, match=r"must end in \.onnx for format=onnx_int8"):
        export_targets.output_paths(("onnx_int8",), run_dir, run_dir / "m.h5")
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
