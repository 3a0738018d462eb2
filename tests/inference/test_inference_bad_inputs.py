"""``tumorcls predict`` and the backends on bad inputs: an --out that would destroy the model or an image,
models that break the input/output contract, and outputs that cannot be written. Each is one line, exit 2."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.inference_fixtures import four_class_metadata, onnx_classifier, write_images
from tumorcls.cli.main import main
from tumorcls.inference import ModelFileError, load_predictor
from tumorcls.labels import CLASS_NAMES


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return onnx_classifier(tmp_path / "model.onnx", metadata=four_class_metadata(CLASS_NAMES))


@pytest.fixture()
def images(tmp_path: Path) -> list[Path]:
    return write_images(tmp_path / "images")


def one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


# ---------------------------------------------------------------- --out must not destroy inputs


def test_out_naming_the_model_is_refused_even_with_overwrite(model: Path, images: list[Path], capsys) -> None:
    before = model.read_bytes()
    for extra in ([], ["--overwrite"]):
        rc = main(["predict", str(images[0].parent), "--model", str(model), "--csv", "--out", str(model), *extra])
        assert rc == 2
        assert one_error(capsys) == f"error: --out '{model}' is the model file; refusing to overwrite it"
    assert model.read_bytes() == before
    assert load_predictor(model).class_names == list(CLASS_NAMES)


def test_out_naming_an_input_image_is_refused(model: Path, images: list[Path], capsys) -> None:
    before = images[1].read_bytes()
    out = images[1].parent / ".." / images[1].parent.name / images[1].name  # the same file, spelt otherwise
    rc = main(["predict", str(images[1].parent), "--model", str(model), "--out", str(out), "--overwrite"])
    assert rc == 2
    assert one_error(capsys) == f"error: --out '{out}' is one of the input images; refusing to overwrite it"
    assert images[1].read_bytes() == before


def test_existing_out_is_replaced_only_with_overwrite(model: Path, images: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "preds.json"
    out.write_text("precious")
    assert main(["predict", str(images[0]), "--model", str(model), "--json", "--out", str(out)]) == 2
    assert one_error(capsys) == f"error: --out '{out}' exists; pass --overwrite to replace it"
    assert out.read_text() == "precious"
    assert main(["predict", str(images[0]), "--model", str(model), "--json", "--out", str(out), "--overwrite"]) == 0
    doc = json.loads(out.read_text())
    assert doc["backend"] == "onnx" and len(doc["predictions"]) == 1
    assert doc["metadata"]["class_names"] == json.dumps(list(CLASS_NAMES)) and doc["input_size"] == 32


# ---------------------------------------------------------------- models that break the contract


def test_a_two_class_onnx_model_is_refused(tmp_path: Path, images: list[Path], capsys) -> None:
    two = onnx_classifier(tmp_path / "two.onnx", n_classes=2)
    with pytest.raises(ModelFileError) as info:
        load_predictor(two)
    names = ", ".join(CLASS_NAMES)  # the tutorial's order
    assert str(info.value) == f"'{two}' gives 2 outputs per image, but tumorcls expects 4 classes ({names})"
    assert main(["predict", str(images[0]), "--model", str(two)]) == 2
    assert one_error(capsys) == f"error: {info.value}"


def test_outputs_must_match_the_class_names_in_the_metadata(tmp_path: Path) -> None:
    path = onnx_classifier(tmp_path / "m.onnx", n_classes=4, metadata=four_class_metadata(["a", "b", "c"]))
    expected = r"gives 4 outputs per image, but its metadata names 3 classes \(a, b, c\)$"
    with pytest.raises(ModelFileError, match=expected):
        load_predictor(path)


def test_a_dynamic_output_width_is_measured(tmp_path: Path) -> None:
    ok = onnx_classifier(tmp_path / "ok.onnx", n_classes=4, output_shape=["batch", "classes"])
    assert load_predictor(ok).predict_proba(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 4)
    bad = onnx_classifier(tmp_path / "bad.onnx", n_classes=3, output_shape=["batch", "classes"])
    with pytest.raises(ModelFileError, match="gives 3 outputs per image, but tumorcls expects 4 classes"):
        load_predictor(bad)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (("batch", 12), r"takes 2-D input \['batch', 12\]; expected a batch of images"),
        (("batch", 1, 32, 32), r"takes input \['batch', 1, 32, 32\]; expected 3 colour channels"),
        (("batch", 3, 32, 48), "takes 32 x 48 images; only square inputs are supported"),
    ],
)
def test_inputs_that_are_not_rgb_images_are_refused(tmp_path: Path, shape: tuple, message: str, capsys) -> None:
    path = onnx_classifier(tmp_path / "odd.onnx", input_shape=shape)
    with pytest.raises(ModelFileError, match=message):
        load_predictor(path)
    assert main(["predict", str(write_images(tmp_path / "i", 1)[0]), "--model", str(path)]) == 2
    assert "Traceback" not in one_error(capsys)


def test_input_size_must_agree_with_the_metadata(tmp_path: Path) -> None:
    meta = {**four_class_metadata(CLASS_NAMES), "input_spec": json.dumps({"shape": ["batch", 3, 64, 64]})}
    path = onnx_classifier(tmp_path / "m.onnx", metadata=meta)
    with pytest.raises(ModelFileError, match="takes 32 x 32 images, but its metadata says 64$"):
        load_predictor(path)
    dynamic = onnx_classifier(tmp_path / "d.onnx", input_shape=("batch", 3, "h", "w"), metadata=meta)
    assert load_predictor(dynamic).input_size == 64


def test_a_two_class_keras_model_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="needs the [keras] extra")
    from tumorcls.inference.backends.keras_h5 import keras_module

    keras = keras_module("keras3")
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    path = tmp_path / "two.h5"
    keras.Model(inputs, outputs).save(str(path))
    with pytest.raises(ModelFileError, match=r"gives 2 outputs per image, but tumorcls expects 4 classes"):
        load_predictor(path)
    flat = keras.Input((12,))
    keras.Model(flat, keras.layers.Dense(4, activation="softmax")(flat)).save(str(tmp_path / "flat.h5"))
    with pytest.raises(ModelFileError, match=r"takes 2-D input \[None, 12\]; expected a batch of images"):
        load_predictor(tmp_path / "flat.h5")


# ---------------------------------------------------------------- outputs that cannot be written


def test_out_under_a_regular_file_is_refused_before_predicting(
    model: Path, images: list[Path], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tumorcls.inference.predict as predict_module

    monkeypatch.setattr(predict_module, "predict_batches", lambda *a, **k: pytest.fail("predicted before refusing"))
    blocker = tmp_path / "plain.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "sub" / "preds.csv"
    assert main(["predict", str(images[0].parent), "--model", str(model), "--out", str(out)]) == 2
    assert one_error(capsys) == f"error: cannot write '{out}': '{blocker}' is a file, not a folder"


def test_read_only_file_system_is_refused_before_predicting(
    model: Path, images: list[Path], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tumorcls.atomic_io as atomic_io

    def read_only(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - stands in for tempfile.mkstemp
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic_io.tempfile, "mkstemp", read_only)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(images[0].parent), "--model", str(model), "--out", str(out)]) == 2
    assert one_error(capsys) == f"error: cannot write '{out}': read-only file system"


def test_disk_full_while_writing_is_one_line_and_leaves_no_temporary_file(
    model: Path, images: list[Path], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    # --json: one document written atomically at the end (streamed --csv rows: tests/inference/test_predict_streaming)
    rc = main(["predict", str(images[0].parent), "--model", str(model), "--json", "--out", str(out_dir / "p.json")])
    assert rc == 2
    assert one_error(capsys) == f"error: cannot write '{out_dir / 'p.json'}': disk full"
    assert list(out_dir.iterdir()) == []
