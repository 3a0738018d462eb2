"""``tumorcls predict`` streams CSV / JSON Lines rows: a run stopped half way (SIGTERM, Ctrl-C) keeps its rows and
``--resume`` finishes them to the uninterrupted answer; ``--shard i/n`` parts concatenate to the whole."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from tests.helpers.inference_fixtures import four_class_metadata, onnx_classifier
from tests.helpers.paths import REPO
from tests.helpers.synthetic import make_dataset
from tumorcls.cli.main import main
from tumorcls.errors import OutputError
from tumorcls.inference import predict, streaming
from tumorcls.inference.shards import shard_of
from tumorcls.labels import CLASS_NAMES

N_IMAGES = 48  # 12 per class
BATCH = 4


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_dataset(tmp_path_factory.mktemp("stream_data"), {"Testing": N_IMAGES // 4}, side=32, seed=3)
    return root / "Testing"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_classifier(
        tmp_path_factory.mktemp("stream_model") / "m.onnx", metadata=four_class_metadata(CLASS_NAMES)
    )


def _args(images: Path, model: Path, fmt: str, out: Path, *extra: str) -> list[str]:
    return ["predict", str(images), "--model", str(model), f"--{fmt}", "--out", str(out), "--batch-size", str(BATCH),
            "--threads", "1", "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def whole(images: Path, model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The uninterrupted, unsharded answer in both formats."""
    folder = tmp_path_factory.mktemp("whole")
    texts = {}
    for fmt in ("csv", "jsonl"):
        out = folder / f"all.{fmt}"
        assert main(_args(images, model, fmt, out)) == 0
        texts[fmt] = out.read_text()
    return texts


def _rows(fmt: str, text: str) -> list[str]:
    lines = text.splitlines()
    return lines[1:] if fmt == "csv" else lines


def test_the_whole_answer_has_every_image_once(whole: dict[str, str]) -> None:
    rows = list(csv.DictReader(io.StringIO(whole["csv"])))
    assert len(rows) == N_IMAGES and len({r["path"] for r in rows}) == N_IMAGES
    assert list(rows[0]) == ["path", "predicted", "confidence", *CLASS_NAMES]
    lines = [json.loads(line) for line in whole["jsonl"].splitlines()]
    assert [d["path"] for d in lines] == [r["path"] for r in rows]
    assert [d["predicted"] for d in lines] == [r["predicted"] for r in rows]
    assert set(lines[0]) == {"path", "predicted", "confidence", "probabilities"}


def _start(args: list[str], seconds_per_batch: float) -> subprocess.Popen:
    env = {**os.environ, "TUMORCLS_TEST_BATCH_S": str(seconds_per_batch)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.slow_predict", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_rows(path: Path, rows: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {rows} lines (process status {proc.poll()})")


@pytest.mark.parametrize(
    ("sig", "status", "fmt"), [(signal.SIGTERM, 143, "csv"), (signal.SIGINT, 130, "jsonl")], ids=["sigterm", "sigint"]
)
def test_a_run_stopped_half_way_keeps_its_rows_and_resume_completes_them(
    images: Path, model: Path, whole: dict[str, str], tmp_path: Path, sig: int, status: int, fmt: str
) -> None:
    out = tmp_path / f"preds.{fmt}"
    partial = streaming.partial_path(out)
    proc = _start(_args(images, model, fmt, out), seconds_per_batch=0.15)
    header = 1 if fmt == "csv" else 0
    _wait_for_rows(partial, header + N_IMAGES // 2 - BATCH, proc)  # about half way
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == status, err
    assert err.strip().splitlines() == [err.strip()], err  # one line, no traceback
    name = signal.Signals(sig).name
    assert err.startswith(f"error: interrupted by {name} after ")
    assert f"the finished rows are in '{partial}'; run the same command with --resume to finish" in err
    assert not out.exists()  # the final name only ever holds a complete answer
    kept = _rows(fmt, partial.read_text())
    assert N_IMAGES // 2 - BATCH <= len(kept) < N_IMAGES and len(kept) % BATCH == 0  # whole batches only
    assert kept == _rows(fmt, whole[fmt])[: len(kept)]  # finished rows, as the uninterrupted run wrote them

    assert main(_args(images, model, fmt, out)) == 2  # the interrupted run is not silently started again
    assert main(_args(images, model, fmt, out, "--resume")) == 0
    assert out.read_text() == whole[fmt]
    assert not partial.exists() and not streaming.meta_path(out).exists()


def test_a_row_cut_short_by_a_kill_is_predicted_again(
    images: Path, model: Path, whole: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "preds.csv"
    torn = whole["csv"][: whole["csv"].index("\n", 200) + 30]  # a few rows and the start of the next one
    streaming.partial_path(out).write_text(torn)
    assert main(_args(images, model, "csv", out, "--resume")) == 0
    assert out.read_text() == whole["csv"]


def test_resume_of_a_complete_file_adds_only_the_new_images(
    images: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    names = sorted(images.rglob("*.jpg"))
    for path in names[:10]:
        (folder / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    out = tmp_path / "preds.jsonl"
    assert main(_args(folder, model, "jsonl", out)) == 0
    first = out.read_text()
    for path in names[10:14]:
        (folder / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    capsys.readouterr()
    assert main([arg for arg in _args(folder, model, "jsonl", out, "--resume") if arg != "--quiet"]) == 0
    err = capsys.readouterr().err  # the summary line
    assert "4 image(s) predicted" in err and "10 already in the output" in err
    text = out.read_text()
    assert text.startswith(first) and len(text.splitlines()) == 14
    assert len({json.loads(line)["path"] for line in text.splitlines()}) == 14


def _ctrl_c_at_batch(monkeypatch: pytest.MonkeyPatch, stop_at: int) -> None:
    """In this process: Ctrl-C (KeyboardInterrupt) while the ``stop_at``-th batch is being predicted."""
    real, calls = predict.predict_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_batch", interrupted)


def test_resume_by_another_model_is_refused(images: Path, model: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "preds.csv"
    other = onnx_classifier(tmp_path / "other.onnx", metadata=four_class_metadata(CLASS_NAMES), seed=5)
    with monkeypatch.context() as patch:
        _ctrl_c_at_batch(patch, 3)
        assert main(_args(images, model, "csv", out, "--shard", "0/2")) == 130
    assert len(_rows("csv", streaming.partial_path(out).read_text())) == 2 * BATCH
    capsys.readouterr()
    assert main(_args(images, other, "csv", out, "--shard", "0/2", "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot resume '{streaming.partial_path(out)}': it was written with model" in err[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--json", "--resume"], "--resume needs --csv or --jsonl with --out"),
        (["--resume", "--csv"], "--resume needs --csv or --jsonl with --out"),
        (["--csv", "--resume", "--overwrite", "--out", "x.csv"], "--resume keeps the rows in --out and --overwrite"),
        (["--shard", "2/2"], "--shard i/n needs n >= 1 and 0 <= i < n"),
        (["--shard", "half"], "--shard must be i/n (e.g. 0/4), got 'half'"),
    ],
)
def test_bad_streaming_options_are_one_line(images: Path, model: Path, extra: list[str], message: str, capsys) -> None:
    assert main(["predict", str(images), "--model", str(model), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_shards_concatenate_to_the_unsharded_answer(
    images: Path, model: Path, whole: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    parts = []
    for i in range(3):
        out = tmp_path / f"part{i}.{fmt}"
        resume = ["--resume"] if i == 1 else []  # an array job may always pass --resume: a new file starts empty
        assert main(_args(images, model, fmt, out, "--shard", f"{i}/3", *resume)) == 0
        parts.append(out.read_text())
    # CSV: one header, then every shard's rows (`tail -n +2`); JSON Lines: `cat`
    joined = parts[0] + "".join(p.split("\n", 1)[1] for p in parts[1:]) if fmt == "csv" else "".join(parts)
    assert joined == whole[fmt]
    assert [len(_rows(fmt, p)) for p in parts] == [16, 16, 16]


def test_shard_chunks_are_contiguous_and_cover_everything() -> None:
    items = list(range(10))
    chunks = [shard_of(items, i, 4) for i in range(4)]
    assert sum(chunks, []) == items
    assert sorted(len(c) for c in chunks) == [2, 2, 3, 3]
    assert shard_of(items, 0, 1) == items and shard_of([], 1, 3) == []


def test_stdout_rows_stream_and_no_list_of_every_prediction_is_kept(
    images: Path, model: Path, monkeypatch, capsys
) -> None:
    made: list[weakref.ref] = []
    real_init = predict.Prediction.__init__

    def tracked_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(weakref.ref(self))

    most = []
    real_write = streaming.RowWriter.write

    def counting_write(self, predictions):
        real_write(self, predictions)
        most.append(sum(ref() is not None for ref in made))

    monkeypatch.setattr(predict.Prediction, "__init__", tracked_init)
    monkeypatch.setattr(streaming.RowWriter, "write", counting_write)
    assert main(["predict", str(images), "--model", str(model), "--csv", "--batch-size", str(BATCH), "--quiet"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == N_IMAGES and len(most) == N_IMAGES // BATCH
    assert max(most) <= 2 * BATCH  # this batch (and at most the one before it, not yet collected)


@pytest.mark.parametrize(
    ("extra", "kept"),
    [
        (["--json"], "nothing was written (the table and --json are written at the end; --csv/--jsonl stream rows)"),
        (["--jsonl"], "every finished row was printed; with --out FILE a later --resume can finish the job"),
    ],
)
def test_ctrl_c_without_a_partial_file_says_what_was_kept(
    images: Path, model: Path, monkeypatch, capsys, extra: list[str], kept: str
) -> None:
    _ctrl_c_at_batch(monkeypatch, 3)
    assert main(["predict", str(images), "--model", str(model), "--batch-size", str(BATCH), *extra]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: interrupted by SIGINT after {2 * BATCH} of {N_IMAGES} image(s); {kept}"
    if extra == ["--jsonl"]:
        assert len(captured.out.splitlines()) == 2 * BATCH
    else:
        assert captured.out == ""


def test_a_closed_pipe_stops_the_stream_quietly(images: Path, model: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tumorcls.cli",
            "predict",
            str(images),
            "--model",
            str(model),
            "--csv",
            "--batch-size",
            "1",
            "--quiet",
        ],  # fmt: skip
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("path,predicted")
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1 and err == ""


def test_a_full_disk_mid_stream_is_one_line_and_resume_finishes(
    images: Path, model: Path, whole: dict[str, str], tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "preds.csv"
    real_write, calls = streaming.RowWriter.write, []

    def disk_fills_up(self, predictions):
        calls.append(1)
        if len(calls) == 4:  # the fourth batch does not fit
            self.stream.write("glioma_tumor/img_9.jpg,glio")  # part of a row reached the disk
            raise OutputError(f"cannot write '{self.partial}': disk full")
        real_write(self, predictions)

    with monkeypatch.context() as patch:
        patch.setattr(streaming.RowWriter, "write", disk_fills_up)
        assert main(_args(images, model, "csv", out)) == 2
    partial = streaming.partial_path(out)
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write '{partial}': disk full; the finished rows stay in '{partial}': "
        "run the same command with --resume to finish"
    )
    assert _rows("csv", partial.read_text())[: 3 * BATCH] == _rows("csv", whole["csv"])[: 3 * BATCH]
    assert main(_args(images, model, "csv", out, "--resume")) == 0  # space freed
    assert out.read_text() == whole["csv"]
