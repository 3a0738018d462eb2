"""The scale benchmark's parts: the repeated dataset, the memory measurement of a child, its one-line refusals."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers.synthetic import make_dataset
from tumorcls.bench.scale import main, measured_run, repeated_dataset


def test_the_dataset_is_copied_k_times_under_new_names(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "mri", {"Training": 2, "Testing": 1})
    root, n = repeated_dataset(data, tmp_path / "work", 3)
    copies = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert n == len(copies) == 3 * 12
    assert "Training/glioma_tumor/r2_img_1.jpg" in copies and "Testing/no_tumor/r0_img_0.jpg" in copies
    original = (data / "Training/glioma_tumor/img_1.jpg").read_bytes()
    assert (root / "Training/glioma_tumor/r2_img_1.jpg").read_bytes() == original


def test_a_child_s_peak_memory_and_exit_code_are_measured(tmp_path: Path) -> None:
    touch = "b = bytearray(300 * 1024**2); b[::4096] = b'x' * len(b[::4096])"  # 300 MiB, every page written
    hold = f"import time; {touch}; time.sleep(1); raise SystemExit(3)"
    figures = measured_run([sys.executable, "-c", hold], tmp_path, dict(os.environ), tmp_path / "log.txt")
    assert figures["exit_code"] == 3 and figures["processes"] == 1
    # 300 MiB touched, plus the interpreter (the kernel's high-water mark also counts what the child shared with
    # this process when forked: large under pytest, a few MiB under the benchmark)
    assert 0.29 < figures["tree_rss_gib"] < 0.5 and figures["peak_rss_gib"] >= figures["tree_rss_gib"] - 0.01


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--repeat", "1,x"], "error: --repeat '1,x': a comma-separated list of counts >= 1, e.g. 1,4,16"),
        (["--repeat", "0"], "error: --repeat '0': a comma-separated list of counts >= 1, e.g. 1,4,16"),
        (["--before", "/nonexistent"], "error: --before '/nonexistent' is not a checkout (no train.py)"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path: Path, capsys, args: list[str], line: str) -> None:
    data = make_dataset(tmp_path / "mri", {"Training": 1, "Testing": 1})
    assert main(["--data", str(data), *args]) == 2
    assert capsys.readouterr().err.startswith(line)


def test_a_folder_without_the_kaggle_layout_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --data '{tmp_path}' has no Training/ folder (the Kaggle layout)"
