"""The README's Python examples run as written: each ```python block is executed in a folder holding the files it
names (a tiny trained checkpoint as best.ckpt, its ONNX export as model.onnx, scan1.jpg and a scans/ folder)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.paths import REPO
from tests.helpers.synthetic import make_dataset
from tests.helpers.tiny_model import tiny_checkpoint

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_python_examples() -> None:
    blocks = python_blocks()
    assert blocks and all("tumorcls" in b for b in blocks)


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tumorcls.export.spec import spec_for
    from tumorcls.export.to_onnx import export_onnx
    from tumorcls.models.checkpoint import load_checkpoint

    folder = tmp_path_factory.mktemp("readme")
    shutil.copyfile(tiny_checkpoint(tmp_path_factory), folder / "best.ckpt")
    model, info = load_checkpoint(folder / "best.ckpt")
    export_onnx(model, folder / "model.onnx", spec_for(model, folder / "best.ckpt", info))
    data = make_dataset(tmp_path_factory.mktemp("readme_data"), {"Testing": 1}, side=80, seed=3)
    shutil.copytree(data / "Testing", folder / "scans")
    shutil.copyfile(next((folder / "scans").rglob("*.jpg")), folder / "scan1.jpg")
    return folder


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_a_readme_python_example_runs(index: int, example_folder: Path) -> None:
    source = python_blocks()[index]
    namespace: dict = {}
    before = os.getcwd()
    out = io.StringIO()
    os.chdir(example_folder)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, f"README.md python block {index}", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(before)
    if "probs" in namespace:  # the arrays-or-paths example: one image given both ways gives one answer
        probs = namespace["probs"]
        assert probs.shape == (2, 4) and np.allclose(probs[0], probs[1], atol=1e-6)
    if "heatmaps" in namespace:
        assert namespace["heatmaps"].ndim == 3 and len(namespace["heatmaps"]) == 1
    if "for result in" in source:  # one printed line per image: scan1.jpg and the four in scans/
        assert len(out.getvalue().splitlines()) == 5
