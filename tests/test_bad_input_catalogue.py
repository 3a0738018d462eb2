"""The catalogue of hostile-but-realistic inputs, tried as a new user would: through the command line.

Each case is one row: what the user gives, and what must happen — one clear line and a non-zero exit, or a
counted skip, and nothing lost (inputs and models unchanged). The cases go through the public entry points only
(``tumorcls ...`` via ``tumorcls.cli.main``, ``python train.py``, ``python export.py``), so the same module can be
run against an older checkout to count how many of them it handled.
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
from PIL import Image

from tests.helpers.paths import REPO
from tests.helpers.tiny_model import tiny_checkpoint
from tumorcls.cli import main as cli

TRACEBACK = "Traceback (most recent call last)"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli(list(argv))
    except SystemExit as exc:  # argparse refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_script(script: str, *overrides: str, cwd: Path = REPO, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("TUMORCLS_WEIGHTS", None)
    return subprocess.run(
        [sys.executable, str(REPO / script), *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def script_output(proc: subprocess.CompletedProcess) -> str:
    """Hydra's job logging prints the scripts' error lines on stdout; tracebacks go to stderr."""
    return proc.stdout + proc.stderr


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error" in line.lower()]


def assert_one_line(code: int, err: str, *needles: str) -> None:
    """Refused with a non-zero exit, no traceback, and an error line that says the needles."""
    assert code != 0, err
    assert TRACEBACK not in err, err[-2000:]
    lines = error_lines(err)
    assert lines, err[-2000:]
    assert any(all(n.lower() in line.lower() for n in needles) for line in lines), (needles, lines)


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_model(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    proc = run_script("export.py", f"ckpt={ckpt}", "format=onnx", f"out={out}", "n_check=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


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
    assert code == 1
    assert TRACEBACK not in err
    assert len([line for line in error_lines(err) if "empty.jpg" in line or "notes.jpg" in line]) == 2
    assert "scan.png" in out


def test_truncated_jpeg_is_named(ckpt, tmp_path, capsys):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(good, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    code, _, err = run_cli(capsys, "predict", str(cut), "--model", str(ckpt))
    assert_one_line(code, err, "cut.jpg")


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
    rng = np.random.default_rng(2)
    upright = np.zeros((64, 96, 3), np.uint8)
    upright[:, :32] = rng.integers(150, 255, (64, 32, 3))
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as a camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = tmp_path / "rotated.jpg"
    stored.save(rotated, exif=exif, quality=100)
    plain = tmp_path / "plain.jpg"
    Image.fromarray(upright).save(plain, quality=100)
    code, out, err = run_cli(capsys, "predict", str(rotated), str(plain), "--model", str(ckpt), "--csv")
    assert code == 0, err
    rows = [line.split(",") for line in out.strip().splitlines()[1:]]
    probs = {Path(r[0]).name: np.array([float(v) for v in r[3:]]) for r in rows}
    assert np.abs(probs["rotated.jpg"] - probs["plain.jpg"]).max() < 0.02


def test_decompression_bomb_is_refused(ckpt, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb, optimize=True)
    code, _, err = run_cli(capsys, "predict", str(bomb), "--model", str(ckpt))
    assert_one_line(code, err, "bomb.png")


def test_missing_input_path_is_named(ckpt, tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", str(tmp_path / "nope.jpg"), "--model", str(ckpt))
    assert_one_line(code, err, "nope.jpg")


def test_folder_without_images(ckpt, tmp_path, capsys):
    (tmp_path / "empty_dir").mkdir()
    code, _, err = run_cli(capsys, "predict", str(tmp_path / "empty_dir"), "--model", str(ckpt))
    assert_one_line(code, err, "no image")


def test_a_gif_is_treated_alike_named_directly_or_inside_a_folder(ckpt, tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    gif = folder / "scan.gif"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(gif)
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(folder / "scan.png")
    _, direct, _ = run_cli(capsys, "predict", str(gif), "--model", str(ckpt), "--csv")
    _, walked, _ = run_cli(capsys, "predict", str(folder), "--model", str(ckpt), "--csv")
    assert ("scan.gif" in direct) == ("scan.gif" in walked)


# ---------------------------------------------------------------------------------------------------- models


def test_missing_and_unknown_model_files(scan, tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(tmp_path / "gone.onnx"))
    assert_one_line(code, err, "gone.onnx")
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"\0" * 64)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(weird))
    assert_one_line(code, err, "model.bin")


class _Payload:
    def __reduce__(self):  # noqa: ANN204 - the classic pickle payload
        return (os.system, (f"touch {os.environ.get('CATALOGUE_MARKER', '/tmp/never')}",))


def test_pickle_payload_checkpoint_never_runs(scan, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CATALOGUE_MARKER", str(marker))
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": _Payload()}))
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(evil))
    assert_one_line(code, err, "evil.ckpt")
    assert not marker.exists()


def test_truncated_checkpoint(ckpt, scan, tmp_path, capsys):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(cut))
    assert_one_line(code, err, "cut.ckpt")


@pytest.mark.parametrize("suffix", [".onnx", ".h5"])
def test_junk_model_files(scan, tmp_path, capsys, suffix):
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(os.urandom(2048))
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(junk))
    assert_one_line(code, err, junk.name)


def test_onnx_model_with_another_number_of_classes_is_refused(scan, tmp_path, capsys):
    model = foreign_onnx(tmp_path / "two_class.onnx", classes=2)
    code, out, err = run_cli(capsys, "predict", str(scan), "--model", str(model))
    assert_one_line(code, err, "two_class.onnx")
    assert "glioma" not in out


def test_onnx_model_with_another_input_rank_is_refused(scan, tmp_path, capsys):
    model = foreign_onnx(tmp_path / "flat.onnx", rank=2)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(model))
    assert_one_line(code, err, "flat.onnx")


def test_unknown_device(ckpt, scan, capsys):
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(ckpt), "--device", "tpu")
    assert_one_line(code, err, "tpu")


# ---------------------------------------------------------------------------------------------------- outputs


def test_predict_out_never_overwrites_the_model(onnx_model, scan, capsys):
    before = digest(onnx_model)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(onnx_model), "--csv", "--out", str(onnx_model))
    assert_one_line(code, err, "model.onnx")
    assert digest(onnx_model) == before


def test_predict_out_never_overwrites_an_input(ckpt, scan, capsys):
    before = digest(scan)
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(ckpt), "--csv", "--out", str(scan))
    assert_one_line(code, err, "scan.png")
    assert digest(scan) == before


def test_predict_out_refuses_an_existing_file_unless_told(ckpt, scan, tmp_path, capsys):
    existing = tmp_path / "results.csv"
    existing.write_text("keep me\n")
    code, _, err = run_cli(capsys, "predict", str(scan), "--model", str(ckpt), "--csv", "--out", str(existing))
    assert_one_line(code, err, "results.csv")
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
    assert_one_line(code, err, "blocker")
    assert "image(s) predicted" not in err


def test_evaluate_out_refuses_an_existing_file(ckpt, synthetic_root, tmp_path, capsys):
    existing = tmp_path / "report"
    existing.write_text("keep")
    code, _, err = run_cli(
        capsys, "evaluate", "--model", str(ckpt), "--data", str(synthetic_root), "--split", "Testing",
        "--out", str(existing),
    )  # fmt: skip
    assert_one_line(code, err, "report")
    assert existing.read_text() == "keep"


def test_export_refuses_to_overwrite_without_overwrite(ckpt, tmp_path):
    out = tmp_path / "exists.onnx"
    out.write_bytes(b"precious")
    proc = run_script("export.py", f"ckpt={ckpt}", "format=onnx", f"out={out}")
    assert_one_line(proc.returncode, script_output(proc), "exists.onnx")
    assert out.read_bytes() == b"precious"


def test_export_never_writes_over_its_checkpoint(ckpt, tmp_path):
    copy = tmp_path / "model.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    before = digest(copy)
    proc = run_script("export.py", f"ckpt={copy}", "format=onnx", f"out={copy}", "overwrite=true")
    assert_one_line(proc.returncode, script_output(proc), "model.ckpt")
    assert digest(copy) == before


# ---------------------------------------------------------------------------------------------------- folders


def test_evaluate_missing_data_folder(ckpt, tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", "--model", str(ckpt), "--data", str(tmp_path / "nowhere"))
    assert_one_line(code, err, "nowhere")


def test_evaluate_folder_without_class_folders(ckpt, tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "flat" / "a.png")
    code, _, err = run_cli(capsys, "evaluate", "--model", str(ckpt), "--data", str(tmp_path / "flat"))
    assert_one_line(code, err, "flat")


def test_audit_missing_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "audit", str(tmp_path / "nowhere"))
    assert_one_line(code, err, "nowhere")


def test_aggregate_folder_without_runs(tmp_path, capsys):
    code, _, err = run_cli(capsys, "aggregate", str(tmp_path))
    assert_one_line(code, err, str(tmp_path.name))


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.batch_size=abc", "data.batch_size"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.lr=-0.001", "model.lr"),
        ("data.size=7", "data.size"),
        ("trainer.max_epochs=0", "max_epochs"),
        ("data.crop=brain", "data.crop"),
        ("data.intensity=zscore", "data.intensity"),
    ],
)
def test_bad_config_values_are_refused_before_the_work(synthetic_root, tmp_path, override, needle):
    proc = run_script("train.py", f"data.root={synthetic_root}", f"hydra.run.dir={tmp_path}", *TRAIN_FAST, override)
    assert_one_line(proc.returncode, script_output(proc), needle)
    assert proc.returncode == 2
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_unknown_backbone_is_one_line(synthetic_root, tmp_path):
    proc = run_script(
        "train.py", f"data.root={synthetic_root}", f"hydra.run.dir={tmp_path}", *TRAIN_FAST, "model.backbone=nonet_b9"
    )
    assert_one_line(proc.returncode, script_output(proc), "nonet_b9")
    assert proc.returncode == 2
    assert "Error in call to target" not in script_output(proc)


@pytest.mark.slow
def test_missing_data_root_is_found_before_the_model(tmp_path):
    # an unknown backbone as well: the data root must be the first thing checked, before any model is built
    proc = run_script(
        "train.py", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}", *TRAIN_FAST,
        "model.backbone=nonet_b9",
    )  # fmt: skip
    assert_one_line(proc.returncode, script_output(proc), "nowhere")
    assert proc.returncode == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pickle", "truncated"])
def test_resume_from_a_bad_checkpoint_is_one_line(synthetic_root, ckpt, tmp_path, kind):
    bad = tmp_path / f"{kind}.ckpt"
    if kind == "pickle":
        bad.write_bytes(pickle.dumps({"state_dict": _Payload()}))
    else:
        bad.write_bytes(ckpt.read_bytes()[:4096])
    proc = run_script(
        "train.py", f"data.root={synthetic_root}", f"hydra.run.dir={tmp_path / 'run'}", *TRAIN_FAST, f"ckpt_path={bad}"
    )
    assert_one_line(proc.returncode, script_output(proc), bad.name)
    assert proc.returncode == 2
    assert "weights_only=False" not in script_output(proc)
