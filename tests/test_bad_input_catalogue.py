"""The catalogue of hostile-but-realistic inputs, tried as a new user would: through the command line.

Each case is one row: what the user gives, and what must happen, as README's "What happens with bad input" says:
a refusal is exit status 2 and exactly one error line, no traceback (tests/helpers/refusals.py); predict with some
unreadable files names each in its own ``error: PATH: reason`` line, predicts the rest and exits 1; and nothing is
lost (inputs and models unchanged). The cases go through the public entry points only (``tumorcls ...`` via
``tumorcls.cli.main``, ``python train.py``, ``python export.py``; the EXIF case also reads the one decoder they all
share), so the same module can be run against an older checkout to count how many of them it handled.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.import_time import split_report, top_level
from tests.helpers.paths import REPO
from tests.helpers.refusals import assert_files_failed, assert_refused, assert_script_refused
from tests.helpers.tiny_model import tiny_checkpoint
from tumorcls.cli import main as cli
from tumorcls.data.decode import load_image


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli(list(argv))
    except SystemExit as exc:  # argparse refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_script(
    script: str, *overrides: str, cwd: Path = REPO, timeout: int = 240, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("TUMORCLS_WEIGHTS", None)
    return subprocess.run(
        [sys.executable, *flags, str(REPO / script), *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def csv_probabilities(out: str) -> dict[str, np.ndarray]:
    """``predict --csv`` rows (path,predicted,confidence,<4 classes>) as file name -> probabilities."""
    rows = [line.split(",") for line in out.strip().splitlines()[1:]]
    return {Path(r[0]).name: np.array([float(v) for v in r[3:]]) for r in rows}


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture()
def scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "scan.png"
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    return path


def foreign_onnx(path: Path, classes: int = 2, rank: int = 4) -> Path:
    """An image model that is not ours: the wrong number of classes, or the wrong input rank."""
    import torch

    class Foreign(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = x.flatten(1).mean(dim=1, keepdim=True)
            return torch.softmax(pooled.repeat(1, classes), dim=1)

    shape = (1, 3, 64, 64) if rank == 4 else (1, 64)
    torch.onnx.export(Foreign(), torch.zeros(shape), path, input_names=["x"], dynamo=False)
    return path


# ---------------------------------------------------------------------------------------------------- images


def test_zero_byte_and_text_files_are_named_and_the_rest_still_run(ckpt, scan, tmp_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    code, out, err = run_cli(capsys, "predict", str(scan), str(empty), str(text), "--model", str(ckpt), "--csv")
    assert_files_failed(code, out, err, failed=["empty.jpg", "notes.jpg"], predicted=["scan.png"])


def test_truncated_jpeg_is_named_and_the_rest_still_run(ckpt, tmp_path, capsys):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(good, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    code, out, err = run_cli(capsys, "predict", str(cut), str(good), "--model", str(ckpt), "--csv")
    assert_files_failed(code, out, err, failed=["cut.jpg"], predicted=["good.jpg"])


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "CMYK", "LA", "P", "1"])
def test_unusual_image_modes_are_converted_and_predicted(ckpt, tmp_path, capsys, mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    image = rgb.convert("L").convert(mode) if mode in ("I;16", "1", "LA") else rgb.convert(mode)
    path = tmp_path / ("scan.jpg" if mode == "CMYK" else "scan.png")
    image.save(path)
    code, out, err = run_cli(capsys, "predict", str(path), "--model", str(ckpt), "--csv")
    assert code == 0, err
    assert path.name in out


def test_exif_orientation_is_applied(ckpt, tmp_path, capsys):
    """The file stores the picture on its side with EXIF orientation 6: the decoder must give the upright pixels
    (those of the same picture stored upright), and predict the upright picture's answer, not the stored one's."""
    upright = np.zeros((64, 96, 3), np.uint8)  # a bright left third: every wrong rotation moves it
    upright[:, :32] = np.random.default_rng(2).integers(150, 255, (64, 32, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    jpeg = {"quality": 100, "subsampling": 0}  # 4:4:4 at quality 100: each pixel's round trip within a few levels
    rotated, plain, sideways = tmp_path / "rotated.jpg", tmp_path / "plain.jpg", tmp_path / "sideways.jpg"
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as a camera stores it
    stored.save(rotated, exif=exif, **jpeg)
    stored.save(sideways, **jpeg)  # the same pixels without the tag: what ignoring EXIF would see
    Image.fromarray(upright).save(plain, **jpeg)
    decoded = load_image(rotated.read_bytes()).rgb
    assert decoded.shape == (64, 96, 3)
    gap = np.abs(decoded.astype(int) - load_image(plain.read_bytes()).rgb.astype(int))
    assert gap.max() <= 4 and gap.mean() < 0.5, (gap.max(), gap.mean())
    files = [str(p) for p in (rotated, plain, sideways)]
    code, out, err = run_cli(capsys, "predict", *files, "--model", str(ckpt), "--csv")
    assert code == 0, err
    probs = csv_probabilities(out)
    upright_gap = np.abs(probs["rotated.jpg"] - probs["plain.jpg"]).max()
    assert upright_gap < np.abs(probs["sideways.jpg"] - probs["plain.jpg"]).max() / 10, probs


def test_decompression_bomb_is_refused_and_the_rest_still_run(ckpt, scan, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb, optimize=True)
    code, out, err = run_cli(capsys, "predict", str(bomb), str(scan), "--model", str(ckpt), "--csv")
    (line,) = assert_files_failed(code, out, err, failed=["bomb.png"], predicted=["scan.png"])
    assert "image too large" in line


def test_missing_input_path_is_named_and_the_rest_still_run(ckpt, scan, tmp_path, capsys):
    code, out, err = run_cli(capsys, "predict", str(tmp_path / "nope.jpg"), str(scan), "--model", str(ckpt), "--csv")
    (line,) = assert_files_failed(code, out, err, failed=["nope.jpg"], predicted=["scan.png"])
    assert line.endswith("nope.jpg: no such file or directory")


def test_folder_without_images(ckpt, tmp_path, capsys):
    (tmp_path / "empty_dir").mkdir()
    code, _, err = run_cli(capsys, "predict", str(tmp_path / "empty_dir"), "--model", str(ckpt))
    assert_refused(code, err, "no image")


def test_a_gif_is_predicted_named_directly_or_inside_a_folder(ckpt, tmp_path, capsys):
    """GIF is a supported input (README): found in a folder and named directly alike, and a greyscale GIF is
    lossless, so its answer is that of the PNG of the same pixels."""
    folder = tmp_path / "scans"
    folder.mkdir()
    pixels = np.random.default_rng(3).integers(0, 255, (40, 40), dtype=np.uint8)
    gif = folder / "scan.gif"
    Image.fromarray(pixels).save(gif)
    Image.fromarray(pixels).save(folder / "scan.png")
    code, direct, err = run_cli(capsys, "predict", str(gif), "--model", str(ckpt), "--csv")
    assert code == 0, err
    code, walked, err = run_cli(capsys, "predict", str(folder), "--model", str(ckpt), "--csv")
    assert code == 0, err
    direct_probs, walked_probs = csv_probabilities(direct), csv_probabilities(walked)
    assert list(direct_probs) == ["scan.gif"] and sorted(walked_probs) == ["scan.gif", "scan.png"]
    np.testing.assert_allclose(walked_probs["scan.gif"], direct_probs["scan.gif"], atol=1e-6)
    np.testing.assert_allclose(walked_probs["scan.gif"], walked_probs["scan.png"], atol=1e-6)


# ---------------------------------------------------------------------------------------------------- models


def test_missing_and_unknown_model_files(scan, tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(tmp_path / "gone.onnx"))
    assert_refused(code, err, "gone.onnx")
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"\0" * 64)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(weird))
    assert_refused(code, err, "model.bin")


class _Payload:
    def __reduce__(self):  # noqa: ANN204 - the classic pickle payload
        return (os.system, (f"touch {os.environ.get('CATALOGUE_MARKER', '/tmp/never')}",))


def test_pickle_payload_checkpoint_never_runs(scan, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CATALOGUE_MARKER", str(marker))
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": _Payload()}))
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(evil))
    assert_refused(code, err, "evil.ckpt")
    assert not marker.exists()


def test_truncated_checkpoint(ckpt, scan, tmp_path, capsys):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(cut))
    assert_refused(code, err, "cut.ckpt")


@pytest.mark.parametrize("suffix", [".onnx", ".h5"])
def test_junk_model_files(scan, tmp_path, capsys, suffix):
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(os.urandom(2048))
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(junk))
    assert_refused(code, err, junk.name)


def test_onnx_model_with_another_number_of_classes_is_refused(scan, tmp_path, capsys):
    model = foreign_onnx(tmp_path / "two_class.onnx", classes=2)
    code, out, err = run_cli(capsys, "predict", str(scan), "--model", str(model))
    assert_refused(code, err, "two_class.onnx")
    assert "glioma" not in out


def test_onnx_model_with_another_input_rank_is_refused(scan, tmp_path, capsys):
    model = foreign_onnx(tmp_path / "flat.onnx", rank=2)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(model))
    assert_refused(code, err, "flat.onnx")


def test_unknown_device(ckpt, scan, capsys):
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(ckpt), "--device", "tpu")
    assert_refused(code, err, "tpu")


# ---------------------------------------------------------------------------------------------------- outputs


def test_predict_out_never_overwrites_the_model(ckpt, scan, tmp_path, capsys):
    model = tmp_path / "model.ckpt"
    model.write_bytes(ckpt.read_bytes())
    before = digest(model)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(model), "--csv", "--out", str(model))
    assert_refused(code, err, f"--out '{model}' is", "refusing to overwrite it")
    assert digest(model) == before


def test_predict_out_never_overwrites_an_input(ckpt, scan, capsys):
    before = digest(scan)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(ckpt), "--csv", "--out", str(scan))
    assert_refused(code, err, f"--out '{scan}' is one of the input images; refusing to overwrite it")
    assert digest(scan) == before


def test_predict_out_refuses_an_existing_file_unless_told(ckpt, scan, tmp_path, capsys):
    existing = tmp_path / "results.csv"
    existing.write_text("keep me\n")
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(ckpt), "--csv", "--out", str(existing))
    assert_refused(code, err, "results.csv")
    assert existing.read_text() == "keep me\n"
    code, _, err = run_cli(
        capsys, "predict", str(scan), "--model", str(ckpt), "--csv", "--out", str(existing), "--overwrite"
    )
    assert code == 0, err
    assert "scan.png" in existing.read_text()


def test_predict_out_under_a_file_fails_before_the_work(ckpt, scan, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    code, out, err = run_cli(capsys, "predict", str(scan), "--model", str(ckpt), "--out", str(blocker / "p.csv"))
    assert_refused(code, err, "blocker")
    assert "image(s) predicted" not in err


def test_evaluate_out_refuses_an_existing_file(ckpt, synthetic_root, tmp_path, capsys):
    existing = tmp_path / "report"
    existing.write_text("keep")
    code, _, err = run_cli(
        capsys, "evaluate", "--model", str(ckpt), "--data", str(synthetic_root), "--split", "Testing",
        "--out", str(existing),
    )  # fmt: skip
    assert_refused(code, err, "report")
    assert existing.read_text() == "keep"


def export_refusal(*overrides: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """export.py's refusal, and the top-level modules its process imported."""
    proc, modules = split_report(run_script("export.py", *overrides, flags=("-X", "importtime")))
    return proc, top_level(modules)


@pytest.mark.slow
def test_export_refuses_to_overwrite_without_overwrite(ckpt, tmp_path):
    out = tmp_path / "exists.onnx"
    out.write_bytes(b"precious")
    proc, modules = export_refusal(f"ckpt={ckpt}", "format=onnx", f"out={out}")
    assert_script_refused(proc, "exists.onnx")
    assert out.read_bytes() == b"precious"
    assert "hydra" in modules and modules & {"torch", "onnx", "onnxruntime", "tensorflow"} == set()  # refused first


@pytest.mark.slow
@pytest.mark.parametrize("members", [1, 2], ids=["one", "ensemble"])
def test_export_of_a_missing_checkpoint_is_refused_before_torch_loads(ckpt, tmp_path, members):
    given = [ckpt, tmp_path / "nope.ckpt"][-members:]
    proc, modules = export_refusal(f"ckpt=[{','.join(map(str, given))}]", "format=onnx", f"out={tmp_path / 'e.onnx'}")
    assert assert_script_refused(proc).endswith(f"checkpoint not found: '{tmp_path / 'nope.ckpt'}'")
    assert "torch" not in modules and not (tmp_path / "e.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.ckpt", "model.onnx"])
def test_export_never_writes_over_its_checkpoint(ckpt, tmp_path, name):
    copy = tmp_path / name  # a checkpoint named like an export is still the checkpoint
    copy.write_bytes(ckpt.read_bytes())
    before = digest(copy)
    proc, modules = export_refusal(f"ckpt={copy}", "format=onnx", f"out={copy}", "overwrite=true")
    message = assert_script_refused(proc, name)
    assert ("must end in .onnx" in message) == (name == "model.ckpt") and "torch" not in modules
    assert digest(copy) == before


# ---------------------------------------------------------------------------------------------------- folders


def test_evaluate_missing_data_folder(ckpt, tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", "--model", str(ckpt), "--data", str(tmp_path / "nowhere"))
    assert_refused(code, err, "nowhere")


def test_evaluate_folder_without_class_folders(ckpt, tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "flat" / "a.png")
    code, _, err = run_cli(capsys, "evaluate", "--model", str(ckpt), "--data", str(tmp_path / "flat"))
    assert_refused(code, err, "flat")


def test_audit_missing_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "audit", str(tmp_path / "nowhere"))
    assert_refused(code, err, "nowhere")


def test_aggregate_folder_without_runs(tmp_path, capsys):
    code, _, err = run_cli(capsys, "aggregate", str(tmp_path))
    assert_refused(code, err, str(tmp_path.name))


def test_a_closed_output_pipe_stops_quietly(synthetic_root, monkeypatch, capsys):
    """`tumorcls audit ROOT | head -1`: the reader has gone; no BrokenPipeError traceback, exit status 1."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = os.fdopen(write_end, "w", buffering=1)  # line-buffered, as on a terminal: print() writes at once
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        code = cli(["audit", str(synthetic_root)])
        stdout.write("x" * 70_000)  # the pipe now leads to /dev/null: later writes and the final flush succeed
        stdout.flush()
    finally:
        monkeypatch.undo()
        stdout.close()
    assert code == 1
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- training


TRAIN_FAST = ("trainer.accelerator=cpu", "model.pretrained=false")


# One train.py per check, through the entry point: the refusal's wiring (checked before the work, one log line,
# exit 2). Each key's message, and each kind of bad checkpoint, is tested in-process in
# tests/training/test_training_bad_inputs.py.


@pytest.mark.slow
def test_a_bad_config_value_is_refused_before_the_work(synthetic_root, tmp_path):
    proc = run_script("train.py", f"data.root={synthetic_root}", f"hydra.run.dir={tmp_path}", *TRAIN_FAST,
                      "data.batch_size=abc")  # fmt: skip
    assert_script_refused(proc, "config: data.batch_size must be an integer >= 1, got 'abc'")
    assert not (tmp_path / "splits.csv").exists()  # refused before the dataset was read


@pytest.mark.slow
def test_unknown_backbone_is_one_line(synthetic_root, tmp_path):
    proc = run_script(
        "train.py", f"data.root={synthetic_root}", f"hydra.run.dir={tmp_path}", *TRAIN_FAST, "model.backbone=nonet_b9"
    )
    assert_script_refused(proc, "timm has no model named 'nonet_b9'")


@pytest.mark.slow
def test_missing_data_root_is_found_before_the_model(tmp_path):
    # an unknown backbone as well: the data root must be checked before any model is built
    proc = run_script(
        "train.py", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}", *TRAIN_FAST,
        "model.backbone=nonet_b9",
    )  # fmt: skip
    assert_script_refused(proc, f"dataset not found at '{tmp_path / 'nowhere'}'")


@pytest.mark.slow
def test_resume_from_a_pickle_payload_checkpoint_is_one_line_and_never_runs(synthetic_root, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CATALOGUE_MARKER", str(marker))  # the payload would touch it if it were unpickled
    bad = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": _Payload()}, bad)
    proc = run_script(
        "train.py", f"data.root={synthetic_root}", f"hydra.run.dir={tmp_path / 'run'}", *TRAIN_FAST, f"ckpt_path={bad}"
    )
    assert_script_refused(proc, f"cannot read checkpoint '{bad}' safely: it holds pickled objects")
    assert not marker.exists()
