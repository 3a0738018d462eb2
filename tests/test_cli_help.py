"""``tumorcls <subcommand> --help`` imports only that subcommand, and no model runtime or web framework: checked in
a fresh interpreter through ``sys.modules`` (what was loaded), not by timing."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO
from tumorcls.cli.main import SUBCOMMANDS, SUMMARIES

HEAVY = ("torch", "onnxruntime", "gradio", "tensorflow", "lightning", "fastapi", "uvicorn", "timm", "matplotlib")

_HELP = r"""
import contextlib, io, json, sys
from tumorcls.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "help": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _help(*argv: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _HELP, *argv], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_subcommand_help_loads_no_runtime(name: str) -> None:
    found = _help(name, "--help")
    assert found["code"] == 0 and found["help"].startswith(f"usage: tumorcls {name}")
    assert "--" in found["help"]  # its own options are listed
    loaded = [m for m in found["modules"] if m.split(".")[0] in HEAVY]
    assert sorted({m.split(".")[0] for m in loaded}) == []
    others = [module for other, module in SUBCOMMANDS.items() if other != name and module in found["modules"]]
    assert others == []  # only the chosen subcommand's module


def test_top_level_help_lists_every_subcommand_without_importing_them() -> None:
    found = _help("--help")
    assert found["code"] == 0
    for name in SUBCOMMANDS:
        assert name in found["help"]
    assert [module for module in SUBCOMMANDS.values() if module in found["modules"]] == []


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_each_summary_is_the_opening_of_its_modules_docstring(name: str) -> None:
    doc = " ".join((importlib.import_module(SUBCOMMANDS[name]).__doc__ or "").split())
    assert doc.startswith(SUMMARIES[name])


def test_evaluate_help_default_bins_is_the_calibration_default() -> None:
    from tumorcls.cli import evaluate
    from tumorcls.evaluation.calibration import DEFAULT_BINS

    assert evaluate.DEFAULT_BINS == DEFAULT_BINS
